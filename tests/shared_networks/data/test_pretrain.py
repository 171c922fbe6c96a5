"""What MAE pre-training reads: the training split's images by default, extra unlabelled images only when asked, never
a validation or test image; and the log line that says so (real sample layouts and phantoms)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from shared_networks.data.brats import brats_datalist
from shared_networks.data.btcv import btcv_datalist
from shared_networks.data.cxr14 import cxr14_datalist
from shared_networks.data.pretrain import log_pretrain_images, pretrain_sources
from shared_networks.synthetic.ct import write_btcv_phantom_dataset

UNLABELLED_DIRS = ("imagesTs", "Testing")


def _images(items) -> list[str]:
    return [i["image"] if isinstance(i["image"], str) else " + ".join(i["image"]) for i in items]


def _assert_training_only(datalist) -> None:
    pretrain = _images(datalist["pretrain"])
    assert pretrain == _images(datalist["training"])
    assert not any(f"{os.sep}{d}{os.sep}" in p for p in pretrain for d in UNLABELLED_DIRS)
    assert not set(pretrain) & set(_images(datalist["validation"] + datalist["test"]))


def test_log_line_counts_training_and_extra_images(caplog) -> None:
    training = [{"image": f"/d/imagesTr/img{n:04d}.nii.gz"} for n in (1, 2, 3)]
    extra = [{"image": "/d/imagesTs/img0061.nii.gz"}, {"image": "/d/imagesTs/img0062.nii.gz"}, {"image": "/e/x.nii"}]
    with caplog.at_level(logging.INFO, logger="shared_networks.data.pretrain"):
        message = log_pretrain_images(training, training, False)
        assert message == (
            "MAE pre-training reads 3 images: 3 from the training split, 0 extra (pretrain_extra_images false)"
        )
        assert message in caplog.text
        message = log_pretrain_images(training[:2] + extra, training, "true")
    assert message == (
        "MAE pre-training reads 5 images: 2 from the training split, 3 extra (2 from '/d/imagesTs', 1 from '/e') "
        "(pretrain_extra_images true)"
    )
    assert pretrain_sources(training + extra[:1], training) == (3, {"/d/imagesTs": 1})
    brats2021 = [{"image": [f"/b/BraTS2021_00009/BraTS2021_00009_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")]}]
    assert log_pretrain_images(brats2021, [], True).endswith("1 extra from '/b' (pretrain_extra_images true)")
    with pytest.raises(ValueError, match="pretrain_extra_images"):
        log_pretrain_images(training, training, "maybe")


def test_real_msd_sample_pretrains_on_imagests_only_when_asked(shared_data) -> None:
    root = shared_data("Task01_BrainTumour")
    _assert_training_only(brats_datalist(root))
    extra = brats_datalist(root, pretrain_extra_images=True)
    assert [Path(p).relative_to(root).as_posix() for p in _images(extra["pretrain"])] == [
        "imagesTr/BRATS_001.nii.gz",
        "imagesTs/BRATS_002.nii.gz",
    ]


def test_real_btcv_sample_with_unlabelled_images(shared_data, tmp_path) -> None:
    """The real BTCV sample in the tutorial layout, with an unlabelled imagesTs/ image added."""
    real = shared_data("btcv")
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).symlink_to(real / folder)
    (tmp_path / "imagesTs").mkdir()
    (tmp_path / "imagesTs" / "img0061.nii.gz").symlink_to(real / "imagesTr" / "img0001.nii.gz")
    datalist = btcv_datalist(tmp_path)  # 1 training, 1 validation case
    _assert_training_only(datalist)
    assert len(datalist["pretrain"]) == 1
    extra = btcv_datalist(tmp_path, pretrain_extra_images=True)
    assert _images(extra["pretrain"]) == _images(datalist["training"]) + [str(tmp_path / "imagesTs" / "img0061.nii.gz")]
    assert not set(_images(extra["pretrain"])) & set(_images(extra["validation"] + extra["test"]))


def test_real_chest_xrays_pretrain_on_the_training_split(shared_data) -> None:
    root = shared_data("chestxray14")
    datalist = cxr14_datalist(root)
    _assert_training_only(datalist)
    assert cxr14_datalist(root, pretrain_extra_images=True) == datalist  # the NIH layout has no unlabelled image


def test_synapse_layout_testing_images(tmp_path) -> None:
    """BTCV's Synapse layout: RawData/Testing/img joins pre-training only when asked."""
    data = write_btcv_phantom_dataset(tmp_path / "phantom", num_cases=4, shape=(16, 16, 8), seed=0)
    raw = tmp_path / "btcv" / "RawData"
    for src, dst in (("imagesTr", "Training/img"), ("labelsTr", "Training/label")):
        shutil.copytree(data / src, raw / dst)
    (raw / "Testing" / "img").mkdir(parents=True)
    shutil.copy(data / "imagesTr" / "img0001.nii.gz", raw / "Testing" / "img" / "img0061.nii.gz")
    datalist = btcv_datalist(tmp_path / "btcv", num_val=1, test_fraction=0.25)
    _assert_training_only(datalist)
    extra = btcv_datalist(tmp_path / "btcv", num_val=1, test_fraction=0.25, pretrain_extra_images=True)
    assert [Path(p).name for p in _images(extra["pretrain"])][-1] == "img0061.nii.gz"
    assert len(extra["pretrain"]) == len(datalist["training"]) + 1
