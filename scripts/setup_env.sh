#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv and installs everything the project needs.
# torch is installed first and pinned (2.13.0, the CPU build): an unpinned torch on a machine without one pulls a
# multi-GB CUDA build. Re-running is cheap: nothing is reinstalled while requirements.txt and pyproject.toml are unchanged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
stamp="$venv/.mae-bundles-installed"
want="$(cat "$root/requirements.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing torch 2.13.0 (CPU), requirements.txt and the shared_networks package"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "torch==2.13.0"
    "$venv/bin/python" -m pip install -q -r "$root/requirements.txt"
    "$venv/bin/python" -m pip install -q --no-deps -e "$root"
    "$venv/bin/python" -m pip install -q "pytest>=8" "ruff==0.17.6"
    echo "$want" > "$stamp"
fi
