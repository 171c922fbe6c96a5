"""The split check the training workflows run first (``check_split``): exactly the given items, by data set kind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import shared_networks
from shared_networks.data.btcv import btcv_datalist
from shared_networks.validation.problems import DatasetError
from shared_networks.validation.workflow import check_split

REPO = Path(__file__).resolve().parents[3]


def _nifti(path: Path, data: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return str(path)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def btcv_items(tmp_path) -> list[dict[str, str]]:
    rng = np.random.default_rng(0)
    items = []
    for n in range(3):
        image = _nifti(tmp_path / f"img{n}.nii.gz", rng.normal(size=(12, 12, 8)).astype(np.float32))
        label = _nifti(tmp_path / f"label{n}.nii.gz", (np.arange(12 * 12 * 8) % 3).reshape(12, 12, 8).astype(np.uint8))
        items.append({"image": image, "label": label})
    return items


def test_a_clean_split_passes(btcv_items):
    report = check_split(btcv_items, "btcv")
    assert report is not None and report.ok and report.num_files == 6


def test_a_corrupt_item_stops_with_a_report_naming_the_file(btcv_items):
    _truncate(Path(btcv_items[1]["image"]))
    Path(btcv_items[2]["label"]).unlink()
    with pytest.raises(DatasetError) as err:
        check_split(btcv_items, "btcv")
    message = str(err.value)
    assert btcv_items[1]["image"] in message and "truncated" in message  # every problem, by file
    assert btcv_items[2]["label"] in message and "missing file" in message
    assert btcv_items[0]["image"] not in message
    assert "--check_data false" in message


def test_only_the_given_items_are_checked(btcv_items):
    _truncate(Path(btcv_items[2]["image"]))
    assert check_split(btcv_items[:2], "btcv").ok


@pytest.mark.parametrize("flag", [False, "false", "no", 0, "0"])
def test_check_data_false_skips(btcv_items, flag):
    _truncate(Path(btcv_items[0]["image"]))
    assert check_split(btcv_items, "btcv", flag) is None


def test_bad_flag_and_kind_are_errors(btcv_items):
    with pytest.raises(ValueError, match="check_data"):
        check_split(btcv_items, "btcv", "maybe")
    with pytest.raises(ValueError, match="kind"):
        check_split(btcv_items, "ct")


def test_brats_items_with_and_without_layout(tmp_path):
    rng = np.random.default_rng(0)
    msd = _nifti(tmp_path / "msd.nii.gz", rng.normal(size=(8, 8, 8, 4)).astype(np.float32))
    label = _nifti(tmp_path / "msd_label.nii.gz", np.zeros((8, 8, 8), np.uint8) + np.eye(8, dtype=np.uint8)[..., None])
    flat = _nifti(tmp_path / "flat.nii.gz", rng.normal(size=(8, 8, 8)).astype(np.float32))
    # MONAI Label's datastore items carry no layout: MSD (4-D image)
    assert check_split([{"image": msd, "label": label}, {"image": msd, "layout": "msd"}], "brats").ok
    modalities = [_nifti(tmp_path / f"m{i}.nii.gz", rng.normal(size=(8, 8, 8)).astype(np.float32)) for i in range(4)]
    assert check_split([{"image": modalities, "layout": "brats2021"}], "brats").ok
    with pytest.raises(DatasetError, match="flat.nii.gz"):
        check_split([{"image": flat, "label": label}], "brats")  # 3-D where MSD needs 4-D


def test_cxr14_images(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(good)
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(bad)
    _truncate(bad)
    assert check_split([{"image": str(good), "label": [0.0] * 14}], "cxr14").ok
    with pytest.raises(DatasetError, match="bad.png"):
        check_split([{"image": str(good), "label": [0.0] * 14}, {"image": str(bad), "label": [1.0] * 14}], "cxr14")


def test_the_facade_exports_it():
    assert shared_networks.check_split is check_split and "check_split" in shared_networks.__all__


@pytest.mark.slow
def test_pretraining_stops_before_any_epoch_on_a_truncated_image(shared_data, tmp_path):
    data = tmp_path / "btcv"
    shutil.copytree(shared_data("btcv"), data)
    image = Path(btcv_datalist(str(data))["pretrain"][0]["image"])
    _truncate(image)
    bundle = REPO / "bundles" / "btcv_mae_segmentation"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        f"['{bundle}/configs/pretrain.yaml','{bundle}/configs/quick.yaml']",
        "--bundle_root",
        str(bundle),
        "--dataset_dir",
        str(data),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "runs"),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "DatasetError" in out and str(image) in out and "truncated" in out
    assert "Epoch[1]" not in out and not (tmp_path / "models").exists()
