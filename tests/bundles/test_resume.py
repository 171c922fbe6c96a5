"""Exact resume and seeded repeatability of the bundles' training workflows (CPU, configs/quick.yaml, tiny runs).

A run stopped by an error right after epoch 2's checkpoint and resumed with ``resume=True`` must end with the very
weights (and best model) of an uninterrupted run with the same seed; two runs with the same seed must be identical and
a run with another seed must differ (random crops, flips, affine transforms, MAE masks and shuffles included).
"""

from __future__ import annotations

import locale
from pathlib import Path

import pytest
import torch
from bundle_configs import BundleConfigs
from ignite.engine import Events

from shared_networks.synthetic.brain import write_msd_phantom_dataset
from shared_networks.synthetic.ct import write_btcv_phantom_dataset
from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

BTCV = BundleConfigs("btcv_mae_segmentation")
BRATS = BundleConfigs("brats_mae_segmentation")
CXR14 = BundleConfigs("cxr14_mae_classification")
MAX_EPOCHS = 3


LOCALE = locale.setlocale(locale.LC_CTYPE)  # at collection, before any test ran


@pytest.fixture(autouse=True)
def _text_locale():
    """ITK's DICOM writer (other tests) switches the process to the C locale: MONAI reads metadata.json (UTF-8) with
    the locale's encoding."""
    locale.setlocale(locale.LC_CTYPE, LOCALE)


class Crash(RuntimeError):
    """Stands for a killed run."""


@pytest.fixture(scope="module")
def btcv_data(tmp_path_factory) -> Path:
    return write_btcv_phantom_dataset(tmp_path_factory.mktemp("btcv"), num_cases=3, shape=(40, 40, 24), seed=1)


@pytest.fixture(scope="module")
def cxr14_data(tmp_path_factory) -> Path:
    return write_cxr14_phantom_dataset(tmp_path_factory.mktemp("cxr14"), num_patients=10, size=64, seed=1)


@pytest.fixture(scope="module")
def brats_data(tmp_path_factory) -> Path:
    return write_msd_phantom_dataset(
        tmp_path_factory.mktemp("brats"), num_cases=3, num_unlabelled=1, shape=(40, 40, 32), seed=1
    )


def _run(configs: BundleConfigs, name: str, data: Path, ckpt: Path, crash_after: int | None = None, **override):
    """Runs a training workflow for MAX_EPOCHS (or until the crash); returns its network's weights and workflow."""
    wf = configs.workflow(
        name,
        "train",
        dataset_dir=str(data),
        ckpt_dir=str(ckpt),
        output_dir=str(ckpt / "runs"),
        max_epochs=MAX_EPOCHS,
        ckpt_interval=1,
        **override,
    )
    trainer = wf.parser.get_parsed_content("train#trainer")
    if crash_after is not None:

        def crash(engine):
            raise Crash(f"stopped after epoch {engine.state.epoch}")

        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=crash_after), crash)
        with pytest.raises(RuntimeError) as err:  # monai.bundle wraps the error of a config expression
            wf.run()
        cause = err.value
        while cause is not None and not isinstance(cause, Crash):
            cause = cause.__cause__
        assert isinstance(cause, Crash), err.value
    else:
        wf.run()
    network = trainer.network
    weights = {k: v.detach().clone() for k, v in network.state_dict().items()}
    wf.finalize()
    return weights, trainer


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def _resume_matches(configs, name, data, tmp_path, **override):
    whole, _ = _run(configs, name, data, tmp_path / "whole", **override)
    _run(configs, name, data, tmp_path / "cut", crash_after=2, **override)
    files = sorted(p.name for p in (tmp_path / "cut").glob("*_checkpoint_epoch=*.pt"))
    prefix = files[0].split("_checkpoint_")[0]
    assert files == [f"{prefix}_checkpoint_epoch=1.pt", f"{prefix}_checkpoint_epoch=2.pt"]
    resumed, trainer = _run(configs, name, data, tmp_path / "cut", resume=True, **override)
    assert trainer.state.epoch == MAX_EPOCHS and trainer.state.iteration == MAX_EPOCHS * trainer.state.epoch_length
    _assert_same(whole, resumed)
    # the last ckpt_n_saved (2) checkpoints are kept, the oldest deleted as in the uninterrupted run
    assert (
        sorted(p.name for p in (tmp_path / "cut").glob("*_checkpoint_epoch=*.pt"))
        == sorted(p.name for p in (tmp_path / "whole").glob("*_checkpoint_epoch=*.pt"))
        == [f"{prefix}_checkpoint_epoch=2.pt", f"{prefix}_checkpoint_epoch={MAX_EPOCHS}.pt"]
    )
    return whole


@pytest.mark.slow
def test_btcv_train_resumes_exactly(btcv_data, tmp_path):
    whole = _resume_matches(BTCV, "train", btcv_data, tmp_path, val_interval=1, pretrained_ckpt="none", num_samples=1)
    best_whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    best_resumed = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    _assert_same(best_whole, best_resumed)  # the best model is selected as in the uninterrupted run
    assert whole.keys() == best_whole.keys()


@pytest.mark.slow
def test_cxr14_pretrain_resumes_exactly_and_repeats(cxr14_data, tmp_path):
    """MAE masks and random affine transforms included: resumed = uninterrupted = a second run with the same seed."""
    whole = _resume_matches(CXR14, "pretrain", cxr14_data, tmp_path)
    again, _ = _run(CXR14, "pretrain", cxr14_data, tmp_path / "again")
    _assert_same(whole, again)
    assert torch.load(tmp_path / "cut" / "mae.pt", weights_only=True).keys() == whole.keys()  # mae.pt still written


@pytest.mark.slow
def test_brats_pretrain_resumes_exactly(brats_data, tmp_path):
    _resume_matches(BRATS, "pretrain", brats_data, tmp_path)


def test_linear_probe_checkpoints_apart_from_fine_tuning():
    assert CXR14.parser("linear_probe")["ckpt_prefix"] == "linear_probe"
    assert CXR14.parser("train")["ckpt_prefix"] == "train" and CXR14.parser("pretrain")["ckpt_prefix"] == "pretrain"
    for configs in (BTCV, BRATS, CXR14):
        for name in ("pretrain", "train"):
            p = configs.parser(name, quick=False)
            assert p["resume"] is False and p["ckpt_every_minutes"] >= 1 and p["ckpt_n_saved"] == 2


@pytest.mark.slow
def test_cxr14_linear_probe_resumes_exactly(cxr14_data, tmp_path):
    """Fine-tuning workflow with its own checkpoint prefix, a frozen encoder and the best model on validation AUC."""
    _resume_matches(CXR14, "linear_probe", cxr14_data, tmp_path, val_interval=1, pretrained_ckpt="none")
    assert sorted(p.name for p in (tmp_path / "cut").glob("linear_probe_checkpoint_*.pt"))
    _assert_same(
        torch.load(tmp_path / "whole" / "linear_probe.pt", weights_only=True),
        torch.load(tmp_path / "cut" / "linear_probe.pt", weights_only=True),
    )
