"""The chest X-ray bundle read from a prepared store (``prepared_dir``) instead of the PNGs: the same dataset items
within uint8/uint16 precision, a store of another size or a stale one refused, one quick training epoch."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from bundle_configs import BundleConfigs

from shared_networks.data.prepared import write_cxr14_store
from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

BUNDLE_CONFIGS = BundleConfigs("cxr14_mae_classification")
SIZE = 64  # quick.yaml's img_size
STD = 0.225


def chain(err: BaseException | None) -> str:
    """The messages of an error and its causes (MONAI wraps a failing ``$`` expression's error)."""
    out = []
    while err is not None:
        out.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(out)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return write_cxr14_phantom_dataset(tmp_path_factory.mktemp("cxr14_phantoms"), num_patients=24, size=80, seed=3)


@pytest.fixture(scope="module")
def store(phantoms, tmp_path_factory) -> Path:
    return write_cxr14_store(phantoms, tmp_path_factory.mktemp("store") / "prepared_64", SIZE)


@pytest.mark.parametrize("workflow", ["train", "pretrain"])
def test_dataset_items_from_the_store_equal_the_pngs(phantoms, store, workflow):
    """The training (and validation) dataset items: image within half a stored step (after the normalisation), the
    same label and file name."""
    plain = BUNDLE_CONFIGS.parser(workflow, dataset_dir=str(phantoms), cache_rate=0.0)
    prepared = BUNDLE_CONFIGS.parser(workflow, dataset_dir=str(phantoms), cache_rate=0.0, prepared_dir=str(store))
    ids = ["train#dataset"] + (["validate#dataset"] if workflow == "train" else [])
    # the data check decodes the PNGs only where the workflow reads them: the store's writer decoded every one
    assert plain.get_parsed_content("check_pixels") is True and prepared.get_parsed_content("check_pixels") is False
    step = 0.5 / 65535  # the phantoms hold 16-bit PNGs: a uint16 store
    for dataset_id in ids:
        a, b = plain.get_parsed_content(dataset_id), prepared.get_parsed_content(dataset_id)
        assert len(a) == len(b) > 0
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert x.keys() == y.keys()
            assert float((torch.as_tensor(x["image"]) - torch.as_tensor(y["image"])).abs().max()) <= step / STD + 1e-6
            assert torch.equal(x["label"], y["label"])
            if "image_meta_dict" in x:  # training items: plain tensors and the file name
                assert x["image_meta_dict"] == y["image_meta_dict"]
            else:
                assert x["image"].meta["filename_or_obj"] == y["image"].meta["filename_or_obj"]


def test_a_store_of_another_size_is_refused(phantoms, store):
    parser = BUNDLE_CONFIGS.parser("train", dataset_dir=str(phantoms), prepared_dir=str(store), img_size=[112, 112])
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("train#dataset")
    assert re.search(r"holds 64 x 64 images .*img_size is \[112, 112\]", chain(info.value))


def test_a_stale_store_stops_the_workflow_before_training(phantoms, store, tmp_path):
    image = next((phantoms / "images").glob("*.png"))
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        with pytest.raises(Exception) as info:
            BUNDLE_CONFIGS.workflow(
                "train",
                "train",
                dataset_dir=str(phantoms),
                prepared_dir=str(store),
                ckpt_dir=str(tmp_path),
                output_dir=str(tmp_path),
                check_data=False,
            )
        assert f"{image.name}' changed since the prepared store" in chain(info.value)
    finally:
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.slow
def test_one_quick_training_epoch_from_the_store(phantoms, store, tmp_path):
    wf = BUNDLE_CONFIGS.workflow(
        "train",
        "train",
        dataset_dir=str(phantoms),
        prepared_dir=str(store),
        ckpt_dir=str(tmp_path),
        output_dir=str(tmp_path),
        pretrained_ckpt="none",
        max_epochs=1,
        val_interval=1,
        cache_rate=0.0,
    )
    wf.run()
    assert (tmp_path / "model.pt").is_file()
    assert wf.parser.get_parsed_content("train#dataset").transform.transforms[0].__class__.__name__ == (
        "LoadPreparedRadiographd"
    )
    wf.finalize()
