"""Tests of the synthetic CT phantoms (:mod:`shared_networks.synthetic.ct`)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from shared_networks.data.btcv import BTCV_LABELS, btcv_datalist, find_btcv_cases
from shared_networks.synthetic.ct import DEFAULT_SHAPE, DEFAULT_SPACING, make_ct_phantom, write_btcv_phantom_dataset

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
