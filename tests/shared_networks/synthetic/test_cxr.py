"""Tests of the synthetic chest radiographs (:mod:`shared_networks.synthetic.cxr`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared_networks.data.cxr14 import CXR14_FINDINGS
from shared_networks.synthetic.cxr import make_cxr_phantom, write_cxr14_phantom_dataset


def _mean_over_seeds(findings: list[str], region: tuple[slice, slice], op=np.mean, seeds=range(6)) -> float:
    return float(np.mean([op(make_cxr_phantom(findings, 128, seed=s)[region]) for s in seeds]))


def test_cxr_phantom_image() -> None:
    image = make_cxr_phantom([], 96, seed=0)
    assert image.shape == (96, 96) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    np.testing.assert_array_equal(image, make_cxr_phantom([], 96, seed=0))
    assert not np.array_equal(image, make_cxr_phantom([], 96, seed=1))
    lung, mediastinum, air = image[35:55, 15:30], image[20:50, 46:50], image[2:10, :3]
    assert lung.mean() < 0.35 < mediastinum.mean() and air.mean() < 0.15  # dark lungs, bright centre, air outside
    # the same patient (anatomy seed) on two exposures: same build, different position and noise
    a = make_cxr_phantom([], 96, seed=5, anatomy_seed=9)
    b = make_cxr_phantom([], 96, seed=6, anatomy_seed=9)
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
    for finding in CXR14_FINDINGS:  # every finding leaves a mark on the same exposure
        normal = make_cxr_phantom([], 128, seed=3)
        assert np.abs(make_cxr_phantom([finding], 128, seed=3) - normal).max() > 0.1, finding
    several = make_cxr_phantom(["Effusion", "Mass", "Cardiomegaly"], 128, seed=3)
    assert several.shape == (128, 128)


def test_cxr_phantom_checks_arguments() -> None:
    with pytest.raises(ValueError, match="unknown finding.*'Covid'"):
        make_cxr_phantom(["Covid", "Mass"])
    with pytest.raises(ValueError, match="size"):
        make_cxr_phantom([], 16)


def test_write_cxr14_dataset_in_the_nih_layout(tmp_path: Path) -> None:
    from PIL import Image

    from shared_networks.data.cxr14 import cxr14_datalist, read_cxr14_labels

    root = write_cxr14_phantom_dataset(tmp_path / "cxr", num_patients=12, size=48, seed=4)
    assert sorted(p.name for p in root.iterdir()) == [
        "Data_Entry_2017.csv",
        "images",
        "test_list.txt",
        "train_val_list.txt",
    ]
    header = (root / "Data_Entry_2017.csv").read_text().splitlines()[0]
    assert header == (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    )
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
    again = write_cxr14_phantom_dataset(tmp_path / "again", num_patients=12, size=48, seed=4)
    assert (again / "Data_Entry_2017.csv").read_text() == (root / "Data_Entry_2017.csv").read_text()
    np.testing.assert_array_equal(
        np.asarray(Image.open(again / "images" / images[0].name)), np.asarray(Image.open(images[0]))
    )


def test_write_cxr14_dataset_checks_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_patients"):
        write_cxr14_phantom_dataset(tmp_path, num_patients=2)
    with pytest.raises(ValueError, match="prevalence"):
        write_cxr14_phantom_dataset(tmp_path, prevalence=1.5)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        write_cxr14_phantom_dataset(tmp_path / "f")
