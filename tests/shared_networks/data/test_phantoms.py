"""Tests of the synthetic CT phantoms (:mod:`shared_networks.data.phantoms`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from shared_networks.data import phantoms
from shared_networks.data.btcv import BTCV_LABELS, btcv_datalist, find_btcv_cases
from shared_networks.data.phantoms import DEFAULT_SHAPE, DEFAULT_SPACING, make_ct_phantom, write_btcv_phantom_dataset

SMALL_SHAPE = (48, 48, 24)
SMALL_SPACING = (6.0, 6.0, 10.0)


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The default phantom, seed 0."""
    return make_ct_phantom(seed=0)


def test_shapes_dtypes_and_affine(phantom: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    image, label, affine = phantom
    assert image.shape == label.shape == DEFAULT_SHAPE
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert affine.shape == (4, 4)
    np.testing.assert_allclose(np.diag(affine)[:3], DEFAULT_SPACING)
    np.testing.assert_allclose(affine[:3, :3], np.diag(DEFAULT_SPACING))
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    assert np.all(np.abs(affine[:3, 3]) < 500.0)
    assert np.isfinite(image).all() and image.min() >= -1024.0 and image.max() <= 3071.0
    assert set(np.unique(label).tolist()) <= set(BTCV_LABELS)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_all_organs_present(seed: int) -> None:
    _, label, _ = make_ct_phantom(seed=seed)
    counts = np.bincount(label.ravel(), minlength=14)
    assert len(counts) == 14
    assert all(counts[k] >= 20 for k in range(1, 14)), {BTCV_LABELS[k]: int(counts[k]) for k in range(1, 14)}
    assert counts[6] == counts[1:].max()  # the liver is the largest organ


def test_hounsfield_units(phantom: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    image, label, _ = phantom
    assert 40.0 <= np.median(image[label == 6]) <= 85.0  # liver
    assert 130.0 <= np.median(image[label == 8]) <= 230.0  # aorta
    assert 25.0 <= np.median(image[label == 1]) <= 75.0  # spleen
    assert np.median(image[label == 2]) > np.median(image[label == 6])  # enhancing kidney cortex
    corner = image[:4, :4, :]
    assert np.median(corner) < -950.0 and 5.0 < corner.std() < 30.0  # air with ~15 HU noise
    background = image[label == 0]
    assert (background > 400.0).sum() > 100  # vertebrae and ribs
    assert np.any((background > -150.0) & (background < -50.0))  # fat


def test_seed_determinism() -> None:
    first = make_ct_phantom(SMALL_SHAPE, SMALL_SPACING, seed=7)
    second = make_ct_phantom(SMALL_SHAPE, SMALL_SPACING, seed=7)
    other = make_ct_phantom(SMALL_SHAPE, SMALL_SPACING, seed=8)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])
    assert not np.allclose(first[0], other[0])
    np.testing.assert_array_equal(first[2], other[2])


def test_geometry_is_checked() -> None:
    with pytest.raises(ValueError, match="shape"):
        make_ct_phantom((96, 96))
    with pytest.raises(ValueError, match="shape"):
        make_ct_phantom((96, 96, 4))
    with pytest.raises(ValueError, match="spacing"):
        make_ct_phantom(spacing=(3.0, 0.0, 4.0))


def test_phantom_without_table() -> None:
    image, _, _ = make_ct_phantom(SMALL_SHAPE, SMALL_SPACING, seed=0, with_table=False)
    with_table, _, _ = make_ct_phantom(SMALL_SHAPE, SMALL_SPACING, seed=0)
    assert (with_table > -700).sum() > (image > -700).sum()


def test_write_dataset_loads_back(tmp_path: Path) -> None:
    root = write_btcv_phantom_dataset(tmp_path / "phantom", num_cases=3, seed=5)
    assert root == (tmp_path / "phantom").resolve()
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [f"img000{n}.nii.gz" for n in (1, 2, 3)]
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == [f"label000{n}.nii.gz" for n in (1, 2, 3)]
    assert sorted(p.name for p in root.iterdir()) == ["dataset_0.json", "imagesTr", "labelsTr"]
    for n in (1, 2, 3):
        image = nib.load(root / "imagesTr" / f"img000{n}.nii.gz")
        label = nib.load(root / "labelsTr" / f"label000{n}.nii.gz")
        assert image.shape == label.shape == DEFAULT_SHAPE
        assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8
        np.testing.assert_allclose(image.affine, label.affine)
        np.testing.assert_allclose(image.header.get_zooms(), DEFAULT_SPACING)
        values = np.asarray(label.dataobj)
        assert set(np.unique(values).tolist()) == set(BTCV_LABELS)
    content = json.loads((root / "dataset_0.json").read_text())
    assert content["labels"] == {str(k): v for k, v in BTCV_LABELS.items()}
    assert content["training"] == [
        {"image": f"imagesTr/img000{n}.nii.gz", "label": f"labelsTr/label000{n}.nii.gz"} for n in (1, 2)
    ]
    assert content["validation"] == [{"image": "imagesTr/img0003.nii.gz", "label": "labelsTr/label0003.nii.gz"}]

    datalist = btcv_datalist(root, split="dataset_json")
    assert [item["case"] for item in datalist["training"]] == ["img0001", "img0002"]
    assert [item["case"] for item in datalist["validation"]] == ["img0003"]
    assert [item["case"] for item in datalist["pretrain"]] == ["img0001", "img0002"]
    assert len(find_btcv_cases(root)[0]) == 3

    # Same seed, same data set; cases differ from each other.
    again = write_btcv_phantom_dataset(tmp_path / "again", num_cases=2, seed=5)
    first = np.asarray(nib.load(root / "imagesTr" / "img0001.nii.gz").dataobj)
    np.testing.assert_array_equal(first, np.asarray(nib.load(again / "imagesTr" / "img0001.nii.gz").dataobj))
    assert not np.array_equal(first, np.asarray(nib.load(root / "imagesTr" / "img0002.nii.gz").dataobj))


def test_write_dataset_checks_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_cases"):
        write_btcv_phantom_dataset(tmp_path, num_cases=0)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="file.txt.*not a folder"):
        write_btcv_phantom_dataset(a_file, num_cases=1)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "cli"
    phantoms.main(["btcv", str(output), "--num_cases", "2", "--shape", "32,32,16", "--spacing", "9,9,16"])
    assert str(output) in capsys.readouterr().out
    content = json.loads((output / "dataset_0.json").read_text())
    assert len(content["training"]) == 1 and len(content["validation"]) == 1
    assert nib.load(output / "imagesTr" / "img0002.nii.gz").shape == (32, 32, 16)


@pytest.mark.slow
def test_command_line_module(tmp_path: Path) -> None:
    output = tmp_path / "cli"
    command = [sys.executable, "-m", "shared_networks.data.phantoms", "btcv", str(output), "--num_cases", "1"]
    result = subprocess.run(
        [*command, "--shape", "[24,24,12]"], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (output / "labelsTr" / "label0001.nii.gz").is_file()


# ---- chest radiographs in the ChestX-ray14 layout ----


def _mean_over_seeds(findings: list[str], region: tuple[slice, slice], op=np.mean, seeds=range(6)) -> float:
    return float(np.mean([op(phantoms.make_cxr_phantom(findings, 128, seed=s)[region]) for s in seeds]))


def test_cxr_phantom_image() -> None:
    image = phantoms.make_cxr_phantom([], 96, seed=0)
    assert image.shape == (96, 96) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    np.testing.assert_array_equal(image, phantoms.make_cxr_phantom([], 96, seed=0))
    assert not np.array_equal(image, phantoms.make_cxr_phantom([], 96, seed=1))
    lung, mediastinum, air = image[35:55, 15:30], image[20:50, 46:50], image[2:10, :3]
    assert lung.mean() < 0.35 < mediastinum.mean() and air.mean() < 0.15  # dark lungs, bright centre, air outside
    # the same patient (anatomy seed) on two exposures: same build, different position and noise
    a = phantoms.make_cxr_phantom([], 96, seed=5, anatomy_seed=9)
    b = phantoms.make_cxr_phantom([], 96, seed=6, anatomy_seed=9)
    assert not np.array_equal(a, b) and abs(float((a < 0.3).mean() - (b < 0.3).mean())) < 0.03  # lung area


def test_cxr_findings_change_the_image_in_their_own_way() -> None:
    lower_middle = (slice(70, 100), slice(40, 100))  # where the heart sits (image rows top-down, 128 px)
    assert _mean_over_seeds(["Cardiomegaly"], lower_middle) > _mean_over_seeds([], lower_middle) + 0.03
    lungs = (slice(25, 80), slice(10, 118))
    dark = lambda x: (x < 0.1).mean()  # noqa: E731
    assert _mean_over_seeds(["Pneumothorax"], lungs, dark) > _mean_over_seeds([], lungs, dark) + 0.05
    assert _mean_over_seeds(["Emphysema"], lungs) < _mean_over_seeds([], lungs) - 0.02
    bases = (slice(60, 85), slice(10, 118))
    assert _mean_over_seeds(["Effusion"], bases) > _mean_over_seeds([], bases) + 0.02
    for finding in ("Consolidation", "Edema", "Pneumonia", "Infiltration"):
        assert _mean_over_seeds([finding], lungs) > _mean_over_seeds([], lungs) + 0.005, finding
    for finding in phantoms.CXR14_FINDINGS:  # every finding leaves a mark on the same exposure
        normal = phantoms.make_cxr_phantom([], 128, seed=3)
        assert np.abs(phantoms.make_cxr_phantom([finding], 128, seed=3) - normal).max() > 0.1, finding
    several = phantoms.make_cxr_phantom(["Effusion", "Mass", "Cardiomegaly"], 128, seed=3)
    assert several.shape == (128, 128)


def test_cxr_phantom_checks_arguments() -> None:
    with pytest.raises(ValueError, match="unknown finding.*'Covid'"):
        phantoms.make_cxr_phantom(["Covid", "Mass"])
    with pytest.raises(ValueError, match="size"):
        phantoms.make_cxr_phantom([], 16)


def test_write_cxr14_dataset_in_the_nih_layout(tmp_path: Path) -> None:
    from PIL import Image

    from shared_networks.data.cxr14 import cxr14_datalist, read_cxr14_labels

    root = phantoms.write_cxr14_phantom_dataset(tmp_path / "cxr", num_patients=12, size=48, seed=4)
    assert sorted(p.name for p in root.iterdir()) == ["Data_Entry_2017.csv", "images", "test_list.txt",
                                                      "train_val_list.txt"]  # fmt: skip
    header = (root / "Data_Entry_2017.csv").read_text().splitlines()[0]
    assert header == ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                      "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")  # fmt: skip
    labels = read_cxr14_labels(root / "Data_Entry_2017.csv")
    images = sorted((root / "images").glob("*.png"))
    assert sorted(labels) == [p.name for p in images] and len(images) >= 12
    modes = [Image.open(p).mode for p in images]
    assert {"L", "RGBA", "I;16"} <= set(modes) and modes.count("L") > len(modes) / 2
    assert all(Image.open(p).size == (48, 48) for p in images)
    train_val = (root / "train_val_list.txt").read_text().split()
    test = (root / "test_list.txt").read_text().split()
    assert sorted(train_val + test) == sorted(labels) and len(test) >= 1
    assert not {labels[n][1] for n in train_val} & {labels[n][1] for n in test}  # split by patient
    datalist = cxr14_datalist(root, val_fraction=0.2)
    assert len(datalist["training"]) + len(datalist["validation"]) == len(train_val)
    again = phantoms.write_cxr14_phantom_dataset(tmp_path / "again", num_patients=12, size=48, seed=4)
    assert (again / "Data_Entry_2017.csv").read_text() == (root / "Data_Entry_2017.csv").read_text()
    np.testing.assert_array_equal(np.asarray(Image.open(again / "images" / images[0].name)),
                                  np.asarray(Image.open(images[0])))  # fmt: skip


def test_write_cxr14_dataset_checks_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_patients"):
        phantoms.write_cxr14_phantom_dataset(tmp_path, num_patients=2)
    with pytest.raises(ValueError, match="prevalence"):
        phantoms.write_cxr14_phantom_dataset(tmp_path, prevalence=1.5)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        phantoms.write_cxr14_phantom_dataset(tmp_path / "f")


def test_cxr_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phantoms.main(["cxr", str(tmp_path / "cli"), "--num_patients", "3", "--size", "32", "--seed", "1"])
    assert str(tmp_path / "cli") in capsys.readouterr().out
    assert (tmp_path / "cli" / "test_list.txt").read_text().strip()
