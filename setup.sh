#!/usr/bin/env bash
# One-step setup for pylons_tcjson_template on Debian 12 (or anything with a
# working python2.7).  Safe to rerun: every step checks before it acts.
#
#   ./setup.sh             what the template and its tests need, and .venv
#   ./setup.sh --all       also the benchmark and browser-test peers
#                          (memcached, redis-server, wrk, chromium, nginx); CI does
#   SKIP_APT=1 ./setup.sh  never touch the system, only build .venv
#   PYTHON27=/path/python2.7 ./setup.sh   use that interpreter
#
# What it does, step by step:
#   1. Python 2.7: Pylons 1.0 runs on 2.7 only.  Debian 12 dropped it, so we
#      take python2.7 from Debian 11 (bullseye) with an apt pin that admits
#      only python2.7 and the few libraries it needs from there.
#   2. Tokyo Cabinet (libtokyocabinet9 for the development Tyrant server's
#      .tch files, tokyocabinet-bin for tchmgr), lua5.1 (tcjson.lua's own
#      tests run under the Lua that ttserver links), nodejs unless a node is
#      on PATH (the test of the generated project's Node.js example), and with
#      --all memcached, redis-server and wrk (benchmark peers), chromium
#      (browser tests) and nginx (the test of a generated deploy/nginx-site.conf;
#      Debian also starts nginx's own default site when it installs it).
#      Tests that need a missing one skip and say why; the last lines of the
#      output list them.
#   3. .venv with Python 2.7 (virtualenv<20.22, run from Python 3).
#   4. This package in development mode with its test extras, under
#      pylons_tcjson_template/constraints.txt -- the one list of known-good
#      pins (lupa among them: Lua for tcjson-tyrant -ext, from its Python 2.7
#      wheel).
# Steps 1 and 3 are the functions in pylons_tcjson_template/python27.sh,
# which every generated project's setup.sh uses too.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
venv="$here/.venv"
constraints="$here/pylons_tcjson_template/constraints.txt"

all=0
for arg in "$@"; do
    case "$arg" in
        --all) all=1 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) printf 'setup.sh: unknown option %s (try --help)\n' "$arg" >&2; exit 2 ;;
    esac
done

. "$here/pylons_tcjson_template/python27.sh"

# ---------------------------------------------------------------- 1. Python 2.7
ensure_python27

# ------------------------------------------------------- 2. system packages
# The peers of the benchmark and the browser tests, and which tests skip
# without each (./setup.sh --all installs them).
peers=(memcached redis-server wrk chromium nginx)
declare -A skipped_without=(
    [memcached]="the ext:memcached rows of tests/test_bench_sessions.py"
    [redis-server]="the ext:redis rows of tests/test_bench_sessions.py"
    [wrk]="the full-stack (wrk) rows of tests/test_bench_sessions.py"
    [chromium]="tests/test_template_browser.py, tests/test_template_browser_users.py"
    [nginx]="test_behind_the_generated_nginx_site in tests/test_template_production.py"
)
if [ "$use_apt" = 1 ]; then
    if [ "$all" = 1 ]; then
        step "Tokyo Cabinet, Lua 5.1, benchmark peers and browser"
        apt_install libtokyocabinet9 tokyocabinet-bin lua5.1 "${peers[@]}"
    else
        step "Tokyo Cabinet, Lua 5.1"
        apt_install libtokyocabinet9 tokyocabinet-bin lua5.1
    fi
    # Node.js runs the generated examples/session-tool.mjs in the tests; a
    # node already on PATH (Debian's or a newer one) is used as it is.
    if command -v node >/dev/null 2>&1; then
        note "node on PATH: $(node --version)"
    else
        apt_install nodejs
    fi
else
    step "system packages: skipped (no apt); tests needing them will skip"
fi

# ------------------------------------------------------------------- 3. venv
make_venv "$venv" "$here/.cache/virtualenv"

# ----------------------------------------------------------- 4. this package
step "pylons_tcjson_template (development mode, test extras)"
pip_install_stamped "$venv" "$venv/.installed" setup.py "$constraints" -- \
    -c "$constraints" -e ".[test]"

missing=()
for peer in "${peers[@]}"; do
    command -v "$peer" >/dev/null 2>&1 || [ -x "/usr/sbin/$peer" ] || missing+=("$peer")
done
if [ "${#missing[@]}" -gt 0 ]; then
    step "not installed (./setup.sh --all installs them); these tests skip:"
    for peer in "${missing[@]}"; do
        note "$peer: ${skipped_without[$peer]}"
    done
fi
step "ready: $("$venv/bin/python" -V 2>&1) in .venv; run the tests with: .venv/bin/pytest"
