# shellcheck shell=bash
# Shared set-up for scripts/test.sh and scripts/run.sh (sourced, not run).
#
# On a fresh Debian 12 machine it installs the Debian packages a command needs (only when one is
# missing, with a single `apt-get update` first), creates .venv in the repository with a Python
# >= 3.11, and installs the project editable with the requested extras. Everything is skipped
# when already done, so a second run costs a few dpkg-query and import checks.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
VENV_PY="$VENV/bin/python"

log() { printf '[setup] %s\n' "$*" >&2; }

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root (or sudo) to run: $*"
        return 1
    fi
}

APT_UPDATED=0

# ensure_apt PKG...: install the packages that are not installed yet.
ensure_apt() {
    local missing=() pkg status
    for pkg in "$@"; do
        status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
        [ "$status" = "install ok installed" ] || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" </dev/null
}

# True when $1 is a Python interpreter >= 3.11.
py_ok() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

# The interpreter the venv is made from: python3 on PATH (pyenv or Debian's), else Debian's.
pick_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 /usr/bin/python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 && py_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    ensure_apt python3
    py_ok /usr/bin/python3 && { echo /usr/bin/python3; return 0; }
    log "no Python >= 3.11 found"
    return 1
}

# ensure_venv: .venv exists and its interpreter runs; created with `python3 -m venv`.
ensure_venv() {
    if [ -x "$VENV_PY" ] && py_ok "$VENV_PY" && "$VENV_PY" -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    local py
    py="$(pick_python)"
    rm -rf "$VENV"
    log "creating $VENV with $py"
    if ! "$py" -m venv "$VENV" >/dev/null 2>&1; then
        # Debian splits venv/ensurepip into python3-venv.
        rm -rf "$VENV"
        ensure_apt python3-venv
        "$py" -m venv "$VENV"
    fi
}

# ensure_project EXTRAS MODULE...: the project is installed editable with EXTRAS ("" or
# "[test]") and every MODULE imports. The stamp records pyproject.toml's hash and the extras, so
# pip only runs when they change or an import fails.
ensure_project() {
    local extras="$1"; shift
    local stamp="$VENV/.swtpm_py-install" hash have=""
    hash="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
    [ -f "$stamp" ] && have="$(cat "$stamp")"
    # An install with the test extra also serves a plain run.
    if { [ "$have" = "$hash $extras" ] || { [ -z "$extras" ] && [ "${have%% *}" = "$hash" ]; }; } \
        && (cd / && "$VENV_PY" -c "import $(IFS=,; echo "$*")") >/dev/null 2>&1; then
        return 0
    fi
    log "installing the project into $VENV: pip install -e '.$extras' (log: $VENV/pip.log)"
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV_PY" -m pip install -e "$REPO_ROOT$extras" \
        >"$VENV/pip.log" 2>&1; then
        tail -n 40 "$VENV/pip.log" >&2
        log "pip install failed"
        return 1
    fi
    echo "$hash $extras" >"$stamp"
}
