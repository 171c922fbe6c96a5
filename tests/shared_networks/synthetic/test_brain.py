"""Tests of the synthetic brain tumour MRI (:mod:`shared_networks.synthetic.brain`)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from shared_networks.data.brats import brats_datalist
from shared_networks.data.regions import LABEL_CONVENTIONS
from shared_networks.synthetic.brain import (
    make_brain_phantom,
    write_brats2021_phantom_dataset,
    write_msd_phantom_dataset,
)

SMALL = dict(shape=(40, 48, 36), spacing=(4.0, 4.0, 4.0))


def test_phantom_geometry_and_labels():
    image, label, affine = make_brain_phantom(seed=0)
    assert image.shape == (80, 96, 72, 4) and image.dtype == np.float32
    assert label.shape == (80, 96, 72) and label.dtype == np.uint8
    assert np.allclose(np.diag(affine), [-2.0, -2.0, 2.0, 1.0])  # x and y flipped: readers must reorient
    assert set(np.unique(label)) == {0, 1, 2, 3}
    brain = image[..., 0] > 0
    assert np.all((image > 0) == brain[..., None])  # skull-stripped: every channel zero outside the brain only
    assert 0.2 < brain.mean() < 0.6 and np.all(brain[label > 0])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_phantom_contrasts(seed):
    """Edema bright on FLAIR, the enhancing rim bright on T1gd only: the regions can be told apart."""
    image, label, _ = make_brain_phantom(seed=seed)
    brain = image[..., 0] > 0
    healthy = brain & (label == 0)
    flair, t1, t1gd = (image[..., c] for c in range(3))
    assert flair[label == 1].mean() > 1.4 * flair[healthy].mean()
    assert t1gd[label == 3].mean() > 1.4 * t1gd[label == 1].mean()
    assert t1gd[label == 3].mean() / t1[label == 3].mean() > 2 * t1gd[healthy].mean() / t1[healthy].mean()


def test_phantom_layouts_share_the_anatomy():
    msd_image, msd, _ = make_brain_phantom(seed=5, layout="msd")
    brats_image, brats, _ = make_brain_phantom(seed=5, layout="brats2021")
    assert np.array_equal(msd_image, brats_image)
    for value_msd, value_brats in ((1, 2), (2, 1), (3, 4), (0, 0)):
        assert np.array_equal(msd == value_msd, brats == value_brats)
    assert set(np.unique(brats)) == set(LABEL_CONVENTIONS["brats2021"].values)


def test_phantom_seeds():
    a, _, _ = make_brain_phantom(seed=1, **SMALL)
    b, _, _ = make_brain_phantom(seed=1, **SMALL)
    c, _, _ = make_brain_phantom(seed=2, **SMALL)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        make_brain_phantom(layout="brats2023")
    with pytest.raises(ValueError, match="shape"):
        make_brain_phantom(shape=(4, 4, 4))
    with pytest.raises(ValueError, match="num_cases"):
        write_msd_phantom_dataset(tmp_path, num_cases=-1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        write_brats2021_phantom_dataset(tmp_path / "file", num_cases=1)


def test_msd_dataset(tmp_path):
    root = write_msd_phantom_dataset(tmp_path / "msd", num_cases=3, num_unlabelled=2, seed=4, **SMALL)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["modality"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    assert [e["image"] for e in meta["training"]] == [f"./imagesTr/BRATS_00{n}.nii.gz" for n in (1, 2, 3)]
    assert meta["test"] == ["./imagesTs/BRATS_004.nii.gz", "./imagesTs/BRATS_005.nii.gz"]
    image, label = nib.load(root / "imagesTr" / "BRATS_001.nii.gz"), nib.load(root / "labelsTr" / "BRATS_001.nii.gz")
    assert image.shape == (40, 48, 36, 4) and label.shape == (40, 48, 36) and np.allclose(image.affine, label.affine)
    assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2, 3}
    datalist = brats_datalist(root)
    assert len(datalist["training"] + datalist["validation"] + datalist["test"]) == 3
    assert {"BRATS_004", "BRATS_005"}.isdisjoint(i["case"] for i in datalist["pretrain"])  # the protocol's default
    extra = brats_datalist(root, pretrain_extra_images=True)
    assert {"BRATS_004", "BRATS_005"} <= {i["case"] for i in extra["pretrain"]}


def test_brats2021_dataset(tmp_path):
    root = write_brats2021_phantom_dataset(tmp_path / "b", num_cases=2, num_unlabelled=1, seed=4, **SMALL)
    case = root / "BraTS2021_00000"
    assert sorted(p.name for p in case.iterdir()) == [
        f"BraTS2021_00000_{s}.nii.gz" for s in ("flair", "seg", "t1", "t1ce", "t2")
    ]
    assert not (root / "BraTS2021_00002" / "BraTS2021_00002_seg.nii.gz").exists()
    flair, seg = nib.load(case / "BraTS2021_00000_flair.nii.gz"), nib.load(case / "BraTS2021_00000_seg.nii.gz")
    assert flair.get_data_dtype() == np.int16 and flair.shape == seg.shape == (40, 48, 36)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 4}
    datalist = brats_datalist(root)
    assert [len(datalist[k]) for k in ("training", "validation", "test", "pretrain")] == [1, 1, 0, 1]
    extra = brats_datalist(root, pretrain_extra_images=True)
    assert len(extra["pretrain"]) == 2  # the case without a segmentation, only when asked
