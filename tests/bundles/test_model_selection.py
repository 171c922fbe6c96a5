"""select_on in train.yaml and linear_probe.yaml: models/model.pt holds the weights of the epoch the rule picks (tiny
chest X-ray phantom runs, configs/quick.yaml, 3 epochs validated each), and a resumed run keeps the same model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bundle_configs import BundleConfigs
from ignite.engine import Events

from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

CXR14 = BundleConfigs("cxr14_mae_classification")
MAX_EPOCHS = 3


@pytest.fixture(scope="module")
def cxr14_data(tmp_path_factory) -> Path:
    return write_cxr14_phantom_dataset(tmp_path_factory.mktemp("cxr14"), num_patients=10, size=64, seed=1)


def _train(name: str, data: Path, out: Path, select_on: str, **override) -> tuple[list[dict], list[dict]]:
    """Runs the workflow; returns each epoch's weights and validation metrics."""
    wf = CXR14.workflow(
        name,
        "train",
        dataset_dir=str(data),
        ckpt_dir=str(out),
        output_dir=str(out / "runs"),
        max_epochs=MAX_EPOCHS,
        val_interval=1,
        pretrained_ckpt="none",
        select_on=select_on,
        **override,
    )
    trainer = wf.parser.get_parsed_content("train#trainer")
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    network = wf.parser.get_parsed_content("network")  # the whole classifier (the probe trains its FeatureHead)
    weights, metrics = [], []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: weights.append({k: v.clone() for k, v in network.state_dict().items()})
    )
    evaluator.add_event_handler(Events.COMPLETED, lambda e: metrics.append(dict(e.state.metrics)))
    wf.run()
    wf.finalize()
    return weights, metrics


def _saved_epoch(path: Path, weights: list[dict]) -> int:
    saved = torch.load(path, weights_only=True)
    same = [i + 1 for i, w in enumerate(weights) if all(torch.equal(saved[k], w[k]) for k in w)]
    assert len(same) == 1, f"{path} matches epochs {same}"
    return same[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("select_on", "base_lr"),
    # learning rates where the rule's epoch is not the last one: with 0.03 the AUC peaks at epoch 2 while the loss
    # keeps falling; with 1.0 the loss rises after epoch 1 while the AUC keeps rising
    [("metric", 0.03), ("loss", 1.0), ("last", 1.0)],
)
def test_each_rule_keeps_the_right_epoch(cxr14_data, tmp_path, select_on, base_lr):
    weights, metrics = _train("train", cxr14_data, tmp_path, select_on, base_lr=base_lr)
    assert len(weights) == len(metrics) == MAX_EPOCHS
    auc, loss = [m["val_mean_auc"] for m in metrics], [m["val_loss"] for m in metrics]
    expected = {
        "metric": auc.index(max(auc)) + 1,  # the first best epoch (a tie keeps the earlier model)
        "loss": loss.index(min(loss)) + 1,
        "last": MAX_EPOCHS,
    }[select_on]
    assert _saved_epoch(tmp_path / "model.pt", weights) == expected, (auc, loss)
    if select_on != "last":  # the run tells the rule apart from keeping the last weights
        assert expected != MAX_EPOCHS, (auc, loss)


@pytest.mark.slow
def test_linear_probe_selects_on_loss_and_resumes(cxr14_data, tmp_path):
    """The linear probe's kept model by lowest validation loss, also after a run resumed from epoch 2."""
    weights, metrics = _train("linear_probe", cxr14_data, tmp_path / "whole", "loss", probe_base_lr=8.0)
    loss = [m["val_loss"] for m in metrics]
    assert _saved_epoch(tmp_path / "whole" / "linear_probe.pt", weights) == loss.index(min(loss)) + 1
    assert loss.index(min(loss)) + 1 < MAX_EPOCHS, loss  # resuming must remember the best loss of epochs 1-2

    cut = tmp_path / "cut"  # the same run, stopped by an error right after epoch 2's checkpoint, then resumed
    wf = CXR14.workflow(
        "linear_probe",
        "train",
        dataset_dir=str(cxr14_data),
        ckpt_dir=str(cut),
        output_dir=str(cut / "runs"),
        max_epochs=MAX_EPOCHS,
        val_interval=1,
        pretrained_ckpt="none",
        select_on="loss",
        ckpt_interval=1,
        probe_base_lr=8.0,
    )

    def crash(engine):
        raise KeyboardInterrupt  # stands for a killed run

    wf.parser.get_parsed_content("train#trainer").add_event_handler(Events.EPOCH_COMPLETED(once=2), crash)
    with pytest.raises(KeyboardInterrupt):
        wf.run()
    wf.finalize()
    wf = CXR14.workflow(
        "linear_probe",
        "train",
        dataset_dir=str(cxr14_data),
        ckpt_dir=str(cut),
        output_dir=str(cut / "runs"),
        max_epochs=MAX_EPOCHS,
        val_interval=1,
        pretrained_ckpt="none",
        select_on="loss",
        ckpt_interval=1,
        resume=True,
        probe_base_lr=8.0,
    )
    trainer = wf.parser.get_parsed_content("train#trainer")
    wf.run()
    assert trainer.state.epoch == MAX_EPOCHS
    resumed = {k: v.clone() for k, v in wf.parser.get_parsed_content("network").state_dict().items()}
    wf.finalize()
    assert all(torch.equal(resumed[k], weights[-1][k]) for k in resumed)
    kept = torch.load(cut / "linear_probe.pt", weights_only=True)
    whole = torch.load(tmp_path / "whole" / "linear_probe.pt", weights_only=True)
    assert all(torch.equal(kept[k], whole[k]) for k in whole)
