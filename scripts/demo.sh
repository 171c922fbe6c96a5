#!/usr/bin/env bash
# The demo (README's first command): sets up .venv if needed, then runs scripts/demo.py (options: --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
exec "$root/.venv/bin/python" "$root/scripts/demo.py" "$@"
