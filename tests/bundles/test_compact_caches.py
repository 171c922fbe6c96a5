"""The 3D bundles' compact caches (float16 images, uint8 labels of one channel) and the disk cache for what does not
fit in memory: what the caches hold, training and validation items equal to the float32 caches' within float16's
precision, and a run whose memory budget is too small for its cache that serves it from disk and finishes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bundle_configs import BundleConfigs

from shared_networks.synthetic.brain import write_msd_phantom_dataset
from shared_networks.synthetic.ct import write_btcv_phantom_dataset

BUNDLES = ("brats_mae_segmentation", "btcv_mae_segmentation")
FLOAT32 = {"image": "float32", "label": "float32"}
# the first label channel of each bundle's training items: BraTS TC, WT, ET (built after the cache), BTCV organ values
LABEL_CHANNELS = {"brats_mae_segmentation": 3, "btcv_mae_segmentation": 1}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return {
        "brats_mae_segmentation": write_msd_phantom_dataset(
            tmp_path_factory.mktemp("msd"),
            num_cases=5,
            num_unlabelled=1,
            seed=3,
            shape=(56, 64, 48),
            spacing=(3.0,) * 3,
        ),
        "btcv_mae_segmentation": write_btcv_phantom_dataset(tmp_path_factory.mktemp("btcv"), num_cases=5, seed=3),
    }


def _close_in_float16(compact: torch.Tensor, plain: torch.Tensor) -> None:
    """Equal within float16's rounding: half a unit in the last place (2^-11 relative), 2^-25 absolute near 0."""
    assert compact.dtype == plain.dtype == torch.float32 and compact.shape == plain.shape
    bound = plain.abs() * 2.0**-11 + 2.0**-25
    assert bool(((compact - plain).abs() <= bound).all()), float((compact - plain).abs().max())
    assert not torch.equal(compact, plain)  # float16 did round: the comparison is not of one pipeline with itself


def _datasets(bundle: str, data: Path, tmp_path: Path, workflow: str, **override):
    p = BundleConfigs(bundle).parser(workflow, dataset_dir=str(data), cache_dir=str(tmp_path / "cache"), **override)
    train = p.get_parsed_content("train#dataset")
    train.transform.set_random_state(seed=11)
    return train, (p.get_parsed_content("validate#dataset") if workflow == "train" else None)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_training_caches_hold_float16_images_and_one_uint8_label_channel(bundle, phantoms, tmp_path):
    train, validate = _datasets(bundle, phantoms[bundle], tmp_path, "train")
    for dataset in (train, validate):
        cached = dataset._cache[0]
        assert cached["image"].dtype == torch.float16 and cached["label"].dtype == torch.uint8
        assert cached["label"].shape[0] == 1 and cached["label"].shape[1:] == cached["image"].shape[1:]
    pretrain, _ = _datasets(bundle, phantoms[bundle], tmp_path, "pretrain")
    assert pretrain._cache[0]["image"].dtype == torch.float16
    assert not (tmp_path / "cache").exists()  # everything fitted in memory: no disk cache


@pytest.mark.parametrize("bundle", BUNDLES)
def test_training_and_validation_items_equal_the_float32_caches_within_float16(bundle, phantoms, tmp_path):
    compact, compact_val = _datasets(bundle, phantoms[bundle], tmp_path, "train")
    plain, plain_val = _datasets(bundle, phantoms[bundle], tmp_path, "train", cache_dtypes=FLOAT32)
    assert plain._cache[0]["image"].dtype == torch.float32
    for i in range(len(compact)):
        a, b = compact[i], plain[i]
        a, b = (a[0], b[0]) if isinstance(a, list) else (a, b)  # BraTS: a list of num_samples crops
        _close_in_float16(a["image"], b["image"])
        assert a["label"].dtype == torch.float32 and torch.equal(a["label"], b["label"])  # the same crop, same labels
        assert a["label"].shape[0] == LABEL_CHANNELS[bundle]
    a, b = compact_val[0], plain_val[0]
    _close_in_float16(a["image"].as_tensor(), b["image"].as_tensor())
    assert torch.equal(a["label"].as_tensor(), b["label"].as_tensor())
    assert torch.equal(a["image"].affine, b["image"].affine)  # metadata kept through the validation's cache


@pytest.mark.parametrize("bundle", BUNDLES)
def test_a_memory_cache_of_nothing_serves_every_case_from_disk_alike(bundle, phantoms, tmp_path):
    memory, _ = _datasets(bundle, phantoms[bundle], tmp_path, "train", cache_rate=1.0)
    disk, _ = _datasets(bundle, phantoms[bundle], tmp_path, "train", cache_rate=0.0)
    assert memory.cache_num == len(memory) and disk.cache_num == 0
    for i in range(len(disk)):
        a, b = memory[i], disk[i]
        a, b = (a[0], b[0]) if isinstance(a, list) else (a, b)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    files = list((tmp_path / "cache").glob("*.pt"))
    assert len(files) == len(disk)
    held = torch.load(files[0], weights_only=True)
    assert held["image"].dtype == torch.float16 and held["label"].dtype == torch.uint8


@pytest.mark.slow
def test_a_run_whose_budget_is_too_small_falls_back_to_disk_and_finishes(phantoms, tmp_path, caplog):
    """BraTS-shaped: the budget (a millionth of the available memory) holds no case; every case of the training and
    validation caches is written to the disk cache once, and pre-training and fine-tuning run from it."""
    configs = BundleConfigs("brats_mae_segmentation")
    common = dict(
        dataset_dir=str(phantoms["brats_mae_segmentation"]),
        ckpt_dir=str(tmp_path / "models"),
        cache_dir=str(tmp_path / "cache"),
        cache_memory_fraction=1e-6,
        max_epochs=2,
    )
    wf = configs.workflow("pretrain", "train", output_dir=str(tmp_path / "pretrain"), recon_interval=2, **common)
    assert wf.parser.get_parsed_content("memory_cache_rate") < 0.01
    wf.run()
    wf.finalize()
    pretrain_files = set((tmp_path / "cache").glob("*.pt"))
    assert len(pretrain_files) == 3 and (tmp_path / "models" / "mae.pt").is_file()  # 3 training cases (fold 0 of 5)

    wf = configs.workflow("train", "train", output_dir=str(tmp_path / "train"), val_interval=1, **common)
    wf.run()
    assert 0.0 <= wf.parser.get_parsed_content("validate#evaluator").state.best_metric <= 1.0
    wf.finalize()
    assert len(set((tmp_path / "cache").glob("*.pt")) - pretrain_files) == 3 + 1  # training and validation cases
    assert (tmp_path / "models" / "model.pt").is_file()
