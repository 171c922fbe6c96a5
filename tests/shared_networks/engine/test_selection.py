"""Model selection rules, the validation loss on raw outputs, and the validation coverage report and warnings."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd

from shared_networks.engine.selection import (
    SelectedModelSaver,
    ValidationCoverage,
    ValidationLoss,
    class_presence,
    validation_coverage,
)

AUC = [0.5, 0.7, 0.6]  # best at epoch 2
LOSS = [0.6, 0.95, 0.7]  # lowest at epoch 1


def _validations(tmp_path, select_on: str, auc=AUC, loss=LOSS) -> float:
    """Three 'validations' (epochs 1..3) of a network whose weight is the epoch number; returns the kept weight."""
    network = torch.nn.Linear(1, 1, bias=False)
    evaluator = Engine(lambda engine, batch: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metrics(engine):  # registered before the saver: what a MONAI evaluator's metrics do
        epoch = engine.state.epoch
        network.weight.data.fill_(float(epoch))
        engine.state.key_metric_name = "val_mean_auc"
        engine.state.metrics = {"val_mean_auc": auc[epoch - 1], "val_loss": loss[epoch - 1]}

    SelectedModelSaver(tmp_path, {"model": network}, select_on=select_on).attach(evaluator)
    evaluator.run([0], max_epochs=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    return float(torch.load(tmp_path / "model.pt", weights_only=True)["weight"])


@pytest.mark.parametrize(("select_on", "epoch"), [("metric", 2), ("loss", 1), ("last", 3)])
def test_each_rule_keeps_its_epoch(tmp_path, select_on, epoch):
    assert _validations(tmp_path, select_on) == epoch


def test_ties_keep_the_earlier_model_and_bad_settings_are_refused(tmp_path):
    assert _validations(tmp_path / "a", "metric", auc=[0.5, 0.7, 0.7]) == 2
    assert _validations(tmp_path / "b", "loss", loss=[0.6, 0.5, 0.5]) == 2
    with pytest.raises(ValueError, match="select_on must be one of 'metric', 'loss', 'last', got 'best'"):
        SelectedModelSaver(tmp_path, {"model": torch.nn.Linear(1, 1)}, select_on="best")
    saver = SelectedModelSaver(tmp_path / "c", {"model": torch.nn.Linear(1, 1)}, select_on="loss")
    evaluator = Engine(lambda engine, batch: None)
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: setattr(e.state, "metrics", {"val_mean_auc": 0.5}))
    saver.attach(evaluator)
    with pytest.raises(ValueError, match="needs the validation loss metric 'val_loss'.*ValidationLoss"):
        evaluator.run([0])


def test_validation_loss_is_the_loss_on_raw_outputs():
    """BCE with logits on the network output (identity), not on the sigmoid of the post-processing."""
    images = [torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 1.0])]
    labels = [torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])]
    loader = DataLoader([{"image": x, "label": y} for x, y in zip(images, labels, strict=True)], batch_size=1)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=torch.nn.Identity(),
        postprocessing=Activationsd(keys="pred", sigmoid=True),
        key_val_metric={"val_loss": ValidationLoss(torch.nn.BCEWithLogitsLoss())},
    )
    evaluator.run()

    def bce(x: float, y: float) -> float:  # -[y log s(x) + (1 - y) log(1 - s(x))]
        return math.log1p(math.exp(-x)) if y == 1 else math.log1p(math.exp(x))

    expected = ((bce(0, 0) + bce(2, 1)) / 2 + (bce(-1, 1) + bce(1, 1)) / 2) / 2
    assert evaluator.state.metrics["val_loss"] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="FORWARD_COMPLETED"):
        ValidationLoss(torch.nn.BCEWithLogitsLoss()).attach(Engine(lambda e, b: None), "val_loss")


def test_class_presence_of_each_label_format():
    index = torch.zeros(1, 4, 4, 2)
    index[0, 0, 0, 0], index[0, 1, 1, 1] = 1, 3
    assert class_presence(index, 4, "index").tolist() == [True, False, True, False]
    regions = torch.zeros(3, 2, 2, 2)
    regions[0, 1, 1, 1] = regions[2, 0, 0, 0] = 1
    assert class_presence(regions, 3, "channels").tolist() == [True, False, True]
    assert class_presence([0.0, 1.0, 0.0], 3, "channels").tolist() == [False, True, False]
    with pytest.raises(ValueError, match="file name"):
        class_presence("labelsTr/label0001.nii.gz", 13, "index")
    with pytest.raises(ValueError, match="does not have 14 class channels"):
        class_presence([0.0, 1.0], 14, "channels")
    with pytest.raises(ValueError, match="label_format must be one of 'index', 'channels'"):
        class_presence(index, 4, "onehot")


def test_coverage_of_a_split_with_a_missing_organ(caplog):
    """Two BTCV-like validation volumes: organ 2 in neither, so its Dice is undefined; fewer than 3 cases."""
    first, second = np.zeros((1, 3, 3, 3)), np.zeros((1, 3, 3, 3))
    first[0, 0, 0, 0], first[0, 1, 1, 1], second[0, 2, 2, 2] = 1, 3, 3
    data = [{"image": "a", "label": first}, {"image": "b", "label": second}]
    assert validation_coverage(data, ["spleen", "right kidney", "left kidney"], "index") == {
        "n_cases": 2,
        "positives": {"spleen": 1, "right kidney": 0, "left kidney": 2},
        "negatives": {"spleen": 1, "right kidney": 2, "left kidney": 0},
    }
    trainer, validator = Engine(lambda e, b: None), Engine(lambda e, b: None)
    coverage = ValidationCoverage(validator, data, ["spleen", "right kidney", "left kidney"], min_cases=3)
    coverage.attach(trainer)
    with caplog.at_level(logging.INFO, logger="shared_networks.engine.selection"):
        trainer.run([0])
        for epoch in (1, 2):  # as a MONAI evaluator run by the trainer at epochs 1 and 2
            validator.run([0], max_epochs=epoch)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "shared_networks.engine.selection"]
    assert messages == [
        ("INFO", "validation split: 2 case(s); no positive case for 1 of 3 classes: right kidney"),
        (
            "WARNING",
            "validation split has 2 case(s), fewer than 3: model selection (select_on=metric) on it will be "
            "noisy; the kept model.pt may not be the best one.",
        ),
        (
            "WARNING",
            "val_mean_dice at epoch 1 is undefined for 1 of 3 classes: right kidney (no positive case); it is "
            "the mean over the other 2.",
        ),
        (
            "WARNING",
            "val_mean_dice at epoch 2 is undefined for 1 of 3 classes: right kidney (no positive case); it is "
            "the mean over the other 2.",
        ),
    ]


def test_undefined_auc_warning_names_classes_without_positives_or_negatives(caplog):
    findings = ["Atelectasis", "Hernia", "Mass", "Nodule"]
    labels = [[1, 0, 0, 1], [1, 0, 1, 0], [1, 0, 0, 0]] + [[1, 0, 1, 1]] * 20  # Hernia: no positive; Atelectasis: no
    data = [{"image": f"{i}.png", "label": [float(v) for v in y]} for i, y in enumerate(labels)]  # negative
    coverage = ValidationCoverage(Engine(lambda e, b: None), data, findings, "channels", "auc", "val_mean_auc", 20)
    with caplog.at_level(logging.INFO, logger="shared_networks.engine.selection"):
        coverage.log_coverage()
        message = coverage.warn_undefined()
    assert message == (
        "val_mean_auc is undefined for 2 of 4 classes: Hernia (no positive case), Atelectasis (no negative case); it "
        "is the mean over the other 2."
    )
    assert caplog.records[0].getMessage() == (
        "validation split: 23 case(s); no positive case for 1 of 4 classes: Hernia; no negative case for: Atelectasis"
    )
    assert [r.levelname for r in caplog.records] == ["INFO", "WARNING"]  # 23 cases: not fewer than 20
    defined = ValidationCoverage(
        Engine(lambda e, b: None), [{"label": [0.0]}, {"label": [1.0]}], ["Mass"], "channels", "auc", min_cases=0
    )
    assert defined.warn_undefined() is None  # both labels present: AUC defined, no warning
