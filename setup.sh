#!/usr/bin/env bash
# One-step setup for pylons_tcjson_template on Debian 12 (or anything with a
# working python2.7).  Safe to rerun: every step checks before it acts.
#
#   ./setup.sh            system packages (when missing) + .venv + this package
#   SKIP_APT=1 ./setup.sh  never touch the system, only build .venv
#   PYTHON27=/path/python2.7 ./setup.sh   use that interpreter
#
# What it does, step by step:
#   1. Python 2.7: Pylons 1.0 runs on 2.7 only.  Debian 12 dropped it, so we
#      take python2.7 from Debian 11 (bullseye) with an apt pin that admits
#      only python2.7 and the few libraries it needs from there.
#   2. Tokyo Cabinet (libtokyocabinet9 for the development Tyrant server's
#      .tch files, tokyocabinet-bin for tchmgr), memcached, redis-server and
#      wrk (benchmark peers), chromium (browser test), and nodejs unless a
#      node is on PATH (the test of the generated project's Node.js example).
#   3. .venv with Python 2.7 (virtualenv<20.22, run from Python 3).
#   4. This package in development mode with its test extras, under
#      constraints.txt -- the one list of known-good pins (lupa among them:
#      Lua for tcjson-tyrant -ext, from its Python 2.7 wheel).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
venv="$here/.venv"
constraints="$here/constraints.txt"

step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

# A python2.7 that really runs (a pyenv shim answers `command -v` even when
# its version is not selected).  $PYTHON27 names one explicitly; with apt we
# use Debian's; without apt, the one on PATH.
working_python27() {
    local candidate candidates
    if [ -n "${PYTHON27:-}" ]; then
        candidates=("$PYTHON27")
    elif [ "$use_apt" = 1 ]; then
        candidates=(/usr/bin/python2.7)          # Debian's, installed below
    else
        candidates=("$(command -v python2.7 2>/dev/null || true)")
    fi
    for candidate in "${candidates[@]}"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        if "$candidate" -c 'import sys, ctypes, ssl, sqlite3; assert sys.version_info[:2] == (2, 7)' \
                >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

apt_packages_missing() {
    local pkg missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    printf '%s\n' "${missing[@]:-}"
}

apt_updated=0
apt_install() {
    local missing
    missing=$(apt_packages_missing "$@" | xargs)
    if [ -z "$missing" ]; then
        note "already installed: $*"
        return 0
    fi
    if [ "$apt_updated" = 0 ]; then
        step "apt-get update"
        as_root apt-get update -qq
        apt_updated=1
    fi
    note "installing: $missing"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
        >/dev/null
}

use_apt=0
if [ "${SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
    use_apt=1
fi

# ---------------------------------------------------------------- 1. Python 2.7
step "Python 2.7"
if py27=$(working_python27); then
    note "found $py27"
elif [ "$use_apt" = 1 ] && [ -z "${PYTHON27:-}" ]; then
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
    if [ "$codename" != bullseye ]; then
        note "adding Debian 11 (bullseye) as a source pinned to python2.7 only"
        as_root tee /etc/apt/sources.list.d/bullseye-python2.7.list >/dev/null <<'EOF'
# Added by pylons_tcjson_template/setup.sh: Python 2.7 for Pylons 1.0.
deb http://deb.debian.org/debian bullseye main
EOF
        as_root tee /etc/apt/preferences.d/bullseye-python2.7 >/dev/null <<'EOF'
# Added by pylons_tcjson_template/setup.sh.  Nothing comes from bullseye
# except python2.7 and the libraries it links against that bookworm lacks.
Package: python2.7 python2.7-minimal libpython2.7 libpython2.7-minimal libpython2.7-stdlib libssl1.1 libffi7 mime-support
Pin: release n=bullseye
Pin-Priority: 500

Package: *
Pin: release n=bullseye
Pin-Priority: -1
EOF
        apt_updated=0
    fi
    apt_install python2.7
    py27=$(working_python27) || die "python2.7 was installed but does not run"
    note "installed $py27"
else
    die "no working python2.7 found${PYTHON27:+ at \$PYTHON27=$PYTHON27} and no apt-get to install one.
Install Python 2.7 first, for example with pyenv:
    pyenv install 2.7.18 && pyenv shell 2.7.18
then run ./setup.sh again (or SKIP_APT=1 ./setup.sh)."
fi

# ------------------------------------------------------- 2. system packages
if [ "$use_apt" = 1 ]; then
    step "Tokyo Cabinet, benchmark peers and browser"
    apt_install libtokyocabinet9 tokyocabinet-bin memcached redis-server wrk chromium
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
step "virtualenv .venv (Python 2.7)"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
    note "exists: $("$venv/bin/python" -V 2>&1)"
else
    host_python=$(command -v python3 || true)
    [ -n "$host_python" ] || die "python3 is needed to run virtualenv"
    # virtualenv 20.22 dropped Python 2 targets; an older one goes into
    # .cache/ (never into the system) and is on PYTHONPATH for this one call.
    bootstrap="$here/.cache/virtualenv"
    venv_path=""
    if ! "$host_python" -c 'import virtualenv, sys; v = tuple(int(p) for p in virtualenv.__version__.split(".")[:2]); sys.exit(v >= (20, 22))' 2>/dev/null; then
        if ! PYTHONPATH="$bootstrap" "$host_python" -c 'import virtualenv' 2>/dev/null; then
            note "installing virtualenv<20.22 into .cache/ for $host_python"
            "$host_python" -m pip install -q --disable-pip-version-check --target "$bootstrap" 'virtualenv<20.22'
        fi
        venv_path="$bootstrap"
    fi
    rm -rf "$venv"
    PYTHONPATH="$venv_path" "$host_python" -m virtualenv -q -p "$py27" "$venv"
    note "created: $("$venv/bin/python" -V 2>&1)"
fi

# ----------------------------------------------------------- 4. this package
step "pylons_tcjson_template (development mode, test extras)"
stamp="$venv/.installed"
inputs_sum=$(cat setup.py constraints.txt | md5sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs_sum" ]; then
    note "up to date"
else
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q --no-python-version-warning \
        -c "$constraints" -e ".[test]"
    printf '%s\n' "$inputs_sum" >"$stamp"
    note "installed"
fi

step "ready: $("$venv/bin/python" -V 2>&1) in .venv; run the tests with: .venv/bin/pytest"
