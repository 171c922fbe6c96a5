#!/usr/bin/env bash
# Creates (or reuses) .venv-monailabel: MONAI Label 0.8.5 with this project's requirements and shared_networks, apart
# from the main .venv, whose torch, numpy and monai it would otherwise change (it pins numpy 1.26, pulls torchvision and
# a CUDA torch unless torch is pinned). Pins: monailabel_app/constraints.txt, applied to every pip call here and to the
# build environments of source-only dependencies (sam2, built without its CUDA extension). Re-running is cheap: nothing
# is reinstalled while requirements.txt, pyproject.toml, the constraints and this script are unchanged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MONAILABEL_VENV:-$root/.venv-monailabel}"
python="${PYTHON:-python3}"
constraints="$root/monailabel_app/constraints.txt"
stamp="$venv/.monailabel-installed"
want="$(cat "$root/requirements.txt" "$root/pyproject.toml" "$constraints" "$root/monailabel_app/venv_compat.py" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "[setup-monailabel] creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
echo "[setup-monailabel] installing monailabel 0.8.5, torch 2.13.0 (CPU), requirements.txt and shared_networks"
export PIP_CONSTRAINT="$constraints" SAM2_BUILD_CUDA=0
"$venv/bin/python" -m pip install -q "torch==2.13.0"
"$venv/bin/python" -m pip install -q "monailabel==0.8.5" -r "$root/requirements.txt"
"$venv/bin/python" -m pip install -q --no-deps -e "$root"
# import fixes that MONAI Label needs here (pydicom 3, torchvision built for the CUDA torch): see monailabel_app/venv_compat.py
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
compat="_mae_monailabel_compat"
cp "$root/monailabel_app/venv_compat.py" "$site/$compat.py"
echo "import $compat" > "$site/$compat.pth"
"$venv/bin/python" -c "import monailabel.app, monailabel.tasks.infer.bundle" > /dev/null
echo "$want" > "$stamp"
