"""The non-finite chain end to end, on the real sample CTs of ../shared/data/btcv made bad here: a CT with a NaN slab
stops pre-training (non-zero exit, epoch, iteration and file named, no mae.pt); a NaN mae.pt stops fine-tuning at
the hand-off; a NaN model.pt is refused by the export and by inference. Each workflow runs as a user runs it,
``python -m monai.bundle run`` in a subprocess, with configs/quick.yaml."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

import shared_networks

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "btcv_mae_segmentation"
CONFIGS = BUNDLE / "configs"

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    package = str(Path(shared_networks.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": package, "OMP_NUM_THREADS": "1"}


def _run(argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=900,
    )


def _bundle_run(workflow: str, **overrides) -> subprocess.CompletedProcess:
    files = "[" + ",".join(f"'{CONFIGS / f}.yaml'" for f in (workflow, "quick")) + "]"
    args = ["-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(BUNDLE), "--num_workers", "0"]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    return _run(args)


def _poisoned(workflow: str, net_id: str, path: Path) -> str:
    """Save the quick-size network ``net_id`` of ``workflow`` with one tensor made NaN; returns the tensor's key."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f"{workflow}.yaml"), str(CONFIGS / "quick.yaml")])
    parser["bundle_root"] = str(BUNDLE)
    state = parser.get_parsed_content(net_id).state_dict()
    key = next(k for k in state if k.startswith("encoder.blocks.1.") and state[k].is_floating_point())
    state[key] = torch.full_like(state[key], math.nan)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return key


@pytest.fixture
def btcv(shared_data, tmp_path):
    data = tmp_path / "btcv"
    shutil.copytree(shared_data("btcv"), data)
    return data


def test_a_ct_with_a_nan_slab_stops_pretraining(btcv, tmp_path):
    image = btcv / "imagesTr" / "img0001.nii.gz"  # the training image of dataset_0.json
    nii = nib.load(image)
    voxels = np.asarray(nii.dataobj, dtype=np.float32)
    voxels[:, :, 10:20] = np.nan  # a slab of ten axial slices: every 48^3 crop holds the whole (padded) z range
    nib.save(nib.Nifti1Image(voxels, nii.affine), image)
    models = tmp_path / "models"
    # the workflow's own check of its split stops first, naming the file
    proc = _bundle_run(
        "pretrain", dataset_dir=btcv, split="dataset_json", ckpt_dir=models, output_dir=tmp_path / "runs", max_epochs=2
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert "DatasetError" in log and "img0001.nii.gz" in log and "not finite" in log, log[-3000:]
    assert not models.exists() or not list(models.glob("*.pt"))
    # trained without that check (--check_data false): the first non-finite loss stops training
    proc = _bundle_run(
        "pretrain",
        dataset_dir=btcv,
        split="dataset_json",
        ckpt_dir=models,
        output_dir=tmp_path / "runs",
        max_epochs=2,
        check_data=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert "NonFiniteError: non-finite training loss" in log, log[-3000:]
    assert "at epoch 1, iteration 1" in log and "img0001.nii.gz" in log
    assert not (models / "mae.pt").exists()
    assert not list(models.glob("*.pt")) if models.exists() else True


def test_a_nan_mae_checkpoint_stops_fine_tuning_at_the_hand_off(btcv, tmp_path):
    mae = tmp_path / "poison" / "mae.pt"
    key = _poisoned("pretrain", "mae_def", mae)
    models = tmp_path / "models"
    proc = _bundle_run(
        "train",
        dataset_dir=btcv,
        split="dataset_json",
        ckpt_dir=models,
        output_dir=tmp_path / "runs",
        pretrained_ckpt=mae,
        max_epochs=1,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert f"NonFiniteError: pre-trained checkpoint {mae}: tensor '{key}' holds non-finite values" in log, log[-3000:]
    assert not (models / "model.pt").exists()


def test_a_nan_model_is_refused_by_export_and_inference(btcv, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "runs", "__pycache__"))
    model = bundle / "models" / "model.pt"
    key = _poisoned("inference", "network_def", model)

    proc = _run(
        [
            "-m",
            "shared_networks.cli.export",
            "--bundle",
            str(bundle),
            "--out",
            str(tmp_path / "dist"),
            "--config_overrides",
            "quick",
        ]
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert f"refusing to export {model}: tensor '{key}'" in log, log[-3000:]
    assert not list((tmp_path / "dist").glob("*.zip"))

    out = tmp_path / "labels"
    proc = _bundle_run("inference", dataset_dir=btcv / "imagesTr" / "img0002.nii.gz", model_path=model, output_dir=out)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert f"NonFiniteError: checkpoint '{model}': tensor '{key}' holds non-finite values" in log, log[-3000:]
    assert not list(out.rglob("*.nii.gz")) if out.exists() else True
