#!/usr/bin/env bash
# Sets up .venv if needed, then runs the test suite (extra arguments go to pytest, e.g. `-m "not slow"`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
