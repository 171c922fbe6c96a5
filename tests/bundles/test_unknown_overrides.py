"""``python -m monai.bundle run`` with a key that is no setting exits non-zero before reading any data, naming the key
and the closest settings; a correct override still runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import shared_networks

REPO = Path(__file__).resolve().parents[2]
CXR = REPO / "bundles" / "cxr14_mae_classification"


def bundle_run(tmp_path: Path, *args: str, dataset_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SHARED_NETWORKS_ALLOW_NEW_SETTINGS", None)
    env["PYTHONPATH"] = str(Path(shared_networks.__file__).resolve().parents[1])
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(CXR / "configs" / "pretrain.yaml"),
        "--bundle_root",
        str(CXR),
        "--dataset_dir",
        str(dataset_dir or tmp_path / "no_data"),
        *args,
    ]
    return subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=600
    )


@pytest.mark.slow
def test_unknown_key_stops_before_data(tmp_path):
    proc = bundle_run(tmp_path, "--base_lr", "0.1", "--output_dir", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert "--base_lr" in proc.stderr and "did you mean --mae_base_lr" in proc.stderr, proc.stderr[-3000:]
    assert "no_data" not in proc.stderr  # stopped before the datalist looked at the data folder
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_correct_key_passes_initialize(tmp_path):
    """``--mae_base_lr`` is a setting: initialize (the check included) passes; ``run_id imports`` then only imports."""
    from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

    data = write_cxr14_phantom_dataset(tmp_path / "cxr14", num_patients=24, size=64, seed=3)  # initialize reads it
    proc = bundle_run(tmp_path, "--mae_base_lr", "0.1", "--run_id", "imports", dataset_dir=data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no setting" not in proc.stderr
