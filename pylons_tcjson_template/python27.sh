# Shell functions for setup scripts: Python 2.7 on Debian 12 and a
# virtualenv with it.  Sourced (". python27.sh") by this repository's
# setup.sh and, copied as deploy/python27.sh, by the setup.sh of every
# project made from the template.  Bash; the caller sets -euo pipefail.
#
#   use_apt          1 when apt may install system packages: apt-get and
#                    dpkg-query exist and SKIP_APT=1 is not set
#   ensure_python27  sets $py27 to a working Python 2.7: $PYTHON27 when
#                    set, else Debian's (installed from Debian 11 with an
#                    apt pin when missing), else the python2.7 on PATH
#   apt_install PKG...        installs what is missing, says what it does
#   make_venv DIR CACHE       virtualenv DIR with $py27, unless one exists
#   pip_install_stamped VENV STAMP FILE... -- PIP ARGS
#                    runs pip once per content of FILE... (setup.py,
#                    constraints.txt) and PIP ARGS: a rerun says "up to
#                    date"; returns 1 when pip fails

step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

use_apt=0
if [ "${SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1 \
        && command -v dpkg-query >/dev/null 2>&1; then
    use_apt=1
fi

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

# Pylons 1.0 runs on Python 2.7 only.  Debian 12 dropped it, so it comes
# from Debian 11 (bullseye), with an apt pin that admits only python2.7 and
# the few libraries it needs from there.
ensure_python27() {
    step "Python 2.7"
    if py27=$(working_python27); then
        note "found $py27"
        return 0
    fi
    if [ "$use_apt" != 1 ] || [ -n "${PYTHON27:-}" ]; then
        die "no working python2.7 found${PYTHON27:+ at \$PYTHON27=$PYTHON27} and no apt-get to install one.
Install Python 2.7 first, for example with pyenv:
    pyenv install 2.7.18 && pyenv shell 2.7.18
then run ./setup.sh again (or SKIP_APT=1 ./setup.sh)."
    fi
    local codename
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
    if [ "$codename" != bullseye ]; then
        note "adding Debian 11 (bullseye) as a source pinned to python2.7 only"
        as_root tee /etc/apt/sources.list.d/bullseye-python2.7.list >/dev/null <<'EOF'
# Added by setup.sh (pylons_tcjson_template): Python 2.7 for Pylons 1.0.
deb http://deb.debian.org/debian bullseye main
EOF
        as_root tee /etc/apt/preferences.d/bullseye-python2.7 >/dev/null <<'EOF'
# Added by setup.sh (pylons_tcjson_template).  Nothing comes from bullseye
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
}

# virtualenv 20.22 dropped Python 2 targets; an older one goes into CACHE
# (never into the system) and is on PYTHONPATH for this one call.  It runs
# under python3 (with apt, python3 and its pip are installed when missing).
make_venv() {
    local venv=$1 cache=$2 host_python venv_path=""
    step "virtualenv $(basename "$venv") (Python 2.7)"
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
        note "exists: $("$venv/bin/python" -V 2>&1)"
        return 0
    fi
    host_python=$(command -v python3 || true)
    if [ -z "$host_python" ] && [ "$use_apt" = 1 ]; then
        apt_install python3                  # not in a minimal Debian 12
        host_python=$(command -v python3 || true)
    fi
    [ -n "$host_python" ] || die "python3 is needed to run virtualenv"
    if ! "$host_python" -c 'import virtualenv, sys; v = tuple(int(p) for p in virtualenv.__version__.split(".")[:2]); sys.exit(v >= (20, 22))' 2>/dev/null; then
        if ! PYTHONPATH="$cache" "$host_python" -c 'import virtualenv' 2>/dev/null; then
            if ! "$host_python" -m pip --version >/dev/null 2>&1 && [ "$use_apt" = 1 ]; then
                apt_install python3-pip
            fi
            note "installing virtualenv<20.22 into $cache for $host_python"
            "$host_python" -m pip install -q --disable-pip-version-check --target "$cache" 'virtualenv<20.22'
        fi
        venv_path="$cache"
    fi
    rm -rf "$venv"
    PYTHONPATH="$venv_path" "$host_python" -m virtualenv -q -p "$py27" "$venv"
    note "created: $("$venv/bin/python" -V 2>&1)"
}

pip_install_stamped() {
    local venv=$1 stamp=$2 inputs=() sum
    shift 2
    while [ "$1" != -- ]; do inputs+=("$1"); shift; done
    shift
    sum=$( (cat "${inputs[@]}"; printf '%s\n' "$@") | md5sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
        note "up to date"
        return 0
    fi
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q --no-python-version-warning "$@" \
        || return 1
    printf '%s\n' "$sum" >"$stamp"
    note "installed"
}
