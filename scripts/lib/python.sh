# Sourced by the scripts: finds a Python >= 3.12 and prepares .venv.
# A candidate counts only if it really runs (pyenv shims on PATH can fail) and is new enough.

_py_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
    local cand root
    for cand in "${PYTHON:-}" python3.13 python3.12 python3; do
        [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && _py_ok "$cand" && { command -v "$cand"; return 0; }
    done
    root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    for cand in $(ls -d "$root"/versions/3.1[2-9]*/bin/python "$root"/versions/3.[2-9][0-9]*/bin/python 2>/dev/null | sort -rV); do
        _py_ok "$cand" && { echo "$cand"; return 0; }
    done
    for cand in /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9] /opt/homebrew/bin/python3.1[2-9]; do
        [ -x "$cand" ] && _py_ok "$cand" && { echo "$cand"; return 0; }
    done
    return 1
}

# ensure_venv DIR: creates DIR/.venv when missing (or too old) and installs the project with its
# dev extras whenever pyproject.toml changed since the last install.
ensure_venv() {
    local top=$1 venv=$1/.venv py stamp want
    if [ ! -x "$venv/bin/python" ] || ! _py_ok "$venv/bin/python"; then
        py=$(find_python) || {
            echo "switchyard: needs Python >= 3.12 (mitmproxy 12 does). Install one, or set PYTHON=/path/to/python3.12." >&2
            return 1
        }
        echo "switchyard: creating .venv with $py" >&2
        rm -rf "$venv"
        "$py" -m venv "$venv" || return 1
    fi
    stamp="$venv/.switchyard-installed"
    want=$(cat "$top/pyproject.toml" | cksum)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "switchyard: installing into .venv (first run takes a minute)" >&2
        log="$venv/.switchyard-install.log"
        if ! "$venv/bin/python" -m pip install --disable-pip-version-check -e "$top[dev]" >"$log" 2>&1; then
            grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 30 >&2
            echo "switchyard: installing failed (full log: $log)" >&2
            return 1
        fi
        echo "$want" > "$stamp"
    fi
}
