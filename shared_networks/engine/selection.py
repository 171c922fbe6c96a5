"""Model selection on the validation split: the selection rule, the validation loss, and what the split covers.

Small validation splits make model selection noisy: a BTCV split of two volumes may hold no oesophagus, a chest X-ray
split of 30 images no hernia, and a metric that is undefined for a class is a mean over fewer classes. The pieces:

* :class:`SelectedModelSaver` writes ``models/model.pt`` by one rule, ``select_on``: ``"metric"`` (the best
  validation key metric), ``"loss"`` (the lowest validation loss) or ``"last"`` (the weights of the last
  validation, which :class:`~shared_networks.engine.handlers.ValidationEveryAndLast` runs at the last epoch).
* :class:`ValidationLoss` is the evaluator's ``val_loss``: ignite's ``Loss`` on the network's raw output, before the
  post-processing (sigmoid, argmax, one-hot) that the metrics see.
* :class:`ValidationCoverage` logs at the start of training how many cases validation holds and which classes have no
  positive (or, for ROC AUC, no negative) case there, warns when the split is small, and warns after each validation
  that the key metric is undefined for those classes (the mean is over the others).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Loss
from ignite.metrics.metric import MetricUsage
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

from shared_networks.engine.checkpoints import AtomicCheckpointSaver

__all__ = [
    "LABEL_FORMATS",
    "METRIC_KINDS",
    "SELECT_ON",
    "SelectedModelSaver",
    "ValidationCoverage",
    "ValidationLoss",
    "class_presence",
    "validation_coverage",
]

logger = logging.getLogger(__name__)

SELECT_ON: tuple[str, ...] = ("metric", "loss", "last")
"""Rules for the model kept as ``model.pt``: best key metric, lowest validation loss, last validation."""

LABEL_FORMATS: tuple[str, ...] = ("index", "channels")
"""``index``: one channel of class numbers (0 background); ``channels``: one channel (or value) per class."""

METRIC_KINDS: tuple[str, ...] = ("dice", "auc")
"""``dice``: undefined for a class without a positive case; ``auc``: without a positive or without a negative case."""


def _check_option(value: Any, allowed: Sequence[str], name: str) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}.")
    return str(value)


class _ForwardWise(MetricUsage):
    """Metric usage that updates after the network's forward pass (``IterationEvents.FORWARD_COMPLETED``), before
    a MONAI engine's post-processing, and computes at the end of the epoch."""

    usage_name: str = "forward_wise"

    def __init__(self) -> None:
        super().__init__(
            started=Events.EPOCH_STARTED,
            completed=Events.EPOCH_COMPLETED,
            iteration_completed=IterationEvents.FORWARD_COMPLETED,
        )


def _pred_and_label(output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    return output[CommonKeys.PRED], output[CommonKeys.LABEL]


class ValidationLoss(Loss):
    """The training loss on the validation data: ignite's ``Loss`` (mean over images, weighted by batch size) fed
    with the network's raw output.

    A MONAI evaluator's metrics see the post-processed output (probabilities, argmax, one-hot); this metric is updated
    right after the forward pass instead (``IterationEvents.FORWARD_COMPLETED``), on the batch of raw logits and
    labels, so ``loss_fn`` is exactly the training loss (``DiceCELoss`` with ``to_onehot_y``, ``DiceLoss`` with
    ``sigmoid``, ``BCEWithLogitsLoss``). Give it as an evaluator's additional metric (``val_loss``); it is summed
    over ranks in a distributed run (ignite).

    Args:
        loss_fn: the loss, called as ``loss_fn(pred, label)`` and returning a scalar.
        output_transform: turns the evaluator's output after the forward pass into ``(pred, label)``.
        device: where the running sum is kept.
    """

    def __init__(
        self,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        output_transform: Callable = _pred_and_label,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(loss_fn, output_transform=output_transform, device=device)

    def attach(self, engine: Engine, name: str, usage: str | MetricUsage = _ForwardWise()) -> None:  # noqa: B008
        """Attach after the forward pass; an engine without MONAI's iteration events is refused."""
        if not engine.has_registered_events(IterationEvents.FORWARD_COMPLETED):
            raise ValueError(
                f"ValidationLoss '{name}' needs an engine that fires IterationEvents.FORWARD_COMPLETED "
                "(a monai.engines evaluator)."
            )
        super().attach(engine, name, _ForwardWise() if usage == "epoch_wise" else usage)


class SelectedModelSaver(AtomicCheckpointSaver):
    """Writes the model chosen by ``select_on`` to ``save_dir/filename`` (atomically) when a validation completes.

    Attach to the evaluator (its ``val_handlers``). ``select_on``:

    * ``"metric"``: the validation with the best key metric (``key_val_metric``; MONAI's rule, ties keep the
      earlier model);
    * ``"loss"``: the validation with the lowest ``loss_name`` metric (:class:`ValidationLoss`);
    * ``"last"``: every validation overwrites the file, so it holds the last validated epoch's weights (the last
      epoch with :class:`~shared_networks.engine.handlers.ValidationEveryAndLast`).

    The record of the kept model is part of :class:`~shared_networks.engine.checkpoints.ResumableCheckpointSaver`'s
    checkpoints (``best_saver``), so a resumed run keeps the same model as an uninterrupted one.

    Args:
        save_dir: folder of the file.
        save_dict: objects to save, e.g. ``{"model": network}``.
        select_on: ``"metric"``, ``"loss"`` or ``"last"``.
        filename: file name of the kept model.
        loss_name: name of the evaluator's validation loss metric (``select_on="loss"``).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping,
        select_on: str = "metric",
        filename: str = "model.pt",
        loss_name: str = "val_loss",
    ) -> None:
        self.select_on = _check_option(select_on, SELECT_ON, "select_on")
        self.loss_name = loss_name
        by_loss = self.select_on == "loss"
        super().__init__(
            save_dir=str(save_dir),
            save_dict=save_dict,
            save_key_metric=True,
            key_metric_filename=filename,
            key_metric_name=loss_name if by_loss else None,
            key_metric_negative_sign=by_loss,
        )
        self.filename = filename
        if self.select_on == "last":  # the evaluator's epoch is the trainer's: a later validation always wins
            self._key_metric_checkpoint.score_function = lambda engine: float(engine.state.epoch)

    def metrics_completed(self, engine: Engine) -> None:
        if self.select_on == "loss" and self.loss_name not in engine.state.metrics:
            raise ValueError(
                f"select_on='loss' needs the validation loss metric '{self.loss_name}' on the evaluator "
                f"(shared_networks.ValidationLoss in its additional_metrics); it has {sorted(engine.state.metrics)}."
            )
        saved = list(self._key_metric_checkpoint._saved)
        super().metrics_completed(engine)
        if list(self._key_metric_checkpoint._saved) != saved:
            name = self.loss_name if self.select_on == "loss" else getattr(engine.state, "key_metric_name", None)
            value = engine.state.metrics.get(name) if name else None
            shown = f", {name} {value:.6g}" if isinstance(value, (int, float)) else ""
            engine.logger.info(
                f"{self.filename}: the weights of epoch {engine.state.epoch} (select_on={self.select_on}{shown})"
            )


def class_presence(label: Any, num_classes: int, label_format: str) -> np.ndarray:
    """Which classes have a positive voxel (or value) in one case's label.

    Args:
        label: ``index``: class numbers with 0 as background (any shape, e.g. (1, H, W, D)); ``channels``: one
            channel per class first ((K, H, W, D) regions, or K values of a multi-label finding vector).
        num_classes: K, the number of classes (background not counted).
        label_format: ``"index"`` or ``"channels"``.

    Returns:
        (K,) bools.

    Raises:
        ValueError: for a label path (not loaded), or a ``channels`` label without K channels.
    """
    _check_option(label_format, LABEL_FORMATS, "label_format")
    if isinstance(label, (str, os.PathLike)):
        raise ValueError(
            f"label '{label}' is a file name: give ValidationCoverage the validation dataset (labels loaded and "
            "pre-processed), or items whose labels are arrays or value lists."
        )
    values = torch.as_tensor(np.asarray(label) if isinstance(label, (list, tuple)) else label).detach().cpu()
    if label_format == "index":
        present = torch.unique(values).round().long().tolist()
        return np.array([k in present for k in range(1, num_classes + 1)])
    if values.ndim == 0 or values.shape[0] != num_classes:
        raise ValueError(f"label of shape {tuple(values.shape)} does not have {num_classes} class channels first.")
    return values.reshape(num_classes, -1).gt(0).any(dim=1).numpy()


def validation_coverage(
    data: Sequence[Mapping[str, Any]], class_names: Sequence[str], label_format: str, label_key: str = "label"
) -> dict[str, Any]:
    """Count, per class, the validation cases with and without a positive label.

    Args:
        data: the validation items (a list, or a MONAI dataset returning pre-processed items).
        class_names: the K class names (no background), in label order.
        label_format: ``"index"`` or ``"channels"`` (see :func:`class_presence`).
        label_key: key of the label in an item.

    Returns:
        ``{"n_cases": N, "positives": {class: count}, "negatives": {class: count}}``.
    """
    names = [str(c) for c in class_names]
    counts = np.zeros(len(names), dtype=int)
    n_cases = 0
    for index in range(len(data)):
        item = data[index]
        items = item if isinstance(item, list) else [item]  # a dataset with several samples per item
        for one in items:
            counts += class_presence(one[label_key], len(names), label_format)
            n_cases += 1
    return {
        "n_cases": n_cases,
        "positives": dict(zip(names, counts.tolist(), strict=True)),
        "negatives": dict(zip(names, (n_cases - counts).tolist(), strict=True)),
    }


class ValidationCoverage:
    """Reports what the validation split can tell: its size, the classes it cannot measure, and when a metric is
    undefined.

    Attach to the trainer (its ``train_handlers``). When training starts it logs the number of validation cases and
    the classes with no positive case there (for ROC AUC also those with no negative case), and warns when the split
    holds fewer than ``min_cases`` cases: model selection on it will be noisy. After every validation it warns, naming
    the classes, that the key metric is undefined for them and is the mean over the other classes. Only rank 0 logs.

    Args:
        validator: the evaluator that validates during training.
        data: the validation items: the evaluator's dataset (pre-processed labels, e.g. ``@validate#dataset``) or a
            list of items whose labels are values (ChestX-ray14's ``@validate#dataset#data``).
        class_names: the K class names (no background), in label order.
        label_format: ``"index"`` (a map of class numbers, 0 background) or ``"channels"`` (one channel per class).
        metric: ``"dice"`` (undefined without a positive case) or ``"auc"`` (undefined without a positive or
            without a negative case).
        metric_name: name of the validation key metric, for the messages.
        min_cases: fewer validation cases than this give a warning.
        select_on: the selection rule in use, for the messages.
        label_key: key of the label in an item.
    """

    def __init__(
        self,
        validator: Engine,
        data: Sequence[Mapping[str, Any]],
        class_names: Sequence[str],
        label_format: str = "index",
        metric: str = "dice",
        metric_name: str = "val_mean_dice",
        min_cases: int = 3,
        select_on: str = "metric",
        label_key: str = "label",
    ) -> None:
        self.validator = validator
        self.data = data
        self.class_names = [str(c) for c in class_names]
        self.label_format = _check_option(label_format, LABEL_FORMATS, "label_format")
        self.metric = _check_option(metric, METRIC_KINDS, "metric")
        self.metric_name = metric_name
        if isinstance(min_cases, bool) or not isinstance(min_cases, int) or min_cases < 0:
            raise ValueError(f"min_cases must be a non-negative whole number, got {min_cases!r}.")
        self.min_cases = min_cases
        self.select_on = _check_option(select_on, SELECT_ON, "select_on")
        self.label_key = label_key
        self.coverage: dict[str, Any] | None = None
        self.undefined: dict[str, str] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.log_coverage)
        self.validator.add_event_handler(Events.COMPLETED, self.warn_undefined)

    def log_coverage(self, engine: Engine | None = None) -> dict[str, Any]:
        """Count the validation split's cases per class, log them and warn about a small split; returns the counts."""
        self.coverage = validation_coverage(self.data, self.class_names, self.label_format, self.label_key)
        n, pos, neg = self.coverage["n_cases"], self.coverage["positives"], self.coverage["negatives"]
        self.undefined = {c: "no positive case" for c in self.class_names if pos[c] == 0}
        if self.metric == "auc":
            self.undefined.update({c: "no negative case" for c in self.class_names if pos[c] > 0 and neg[c] == 0})
        if idist.get_rank() != 0:
            return self.coverage
        no_positive = [c for c in self.class_names if pos[c] == 0]
        message = f"validation split: {n} case(s); "
        message += (
            f"no positive case for {len(no_positive)} of {len(self.class_names)} classes: {', '.join(no_positive)}"
            if no_positive
            else f"each of the {len(self.class_names)} classes has a positive case"
        )
        no_negative = [c for c in self.class_names if pos[c] > 0 and neg[c] == 0]
        if self.metric == "auc" and no_negative:
            message += f"; no negative case for: {', '.join(no_negative)}"
        logger.info(message)
        if n < self.min_cases:
            logger.warning(
                f"validation split has {n} case(s), fewer than {self.min_cases}: model selection "
                f"(select_on={self.select_on}) on it will be noisy; the kept model.pt may not be the best one."
            )
        return self.coverage

    def warn_undefined(self, engine: Engine | None = None) -> str | None:
        """Warn that the key metric is undefined for some classes (once per validation); returns the message."""
        if self.coverage is None:
            self.log_coverage()
        if not self.undefined or idist.get_rank() != 0:
            return None
        named = ", ".join(f"{c} ({why})" for c, why in self.undefined.items())
        defined = len(self.class_names) - len(self.undefined)
        epoch = f" at epoch {engine.state.epoch}" if engine is not None else ""
        message = (
            f"{self.metric_name}{epoch} is undefined for {len(self.undefined)} of {len(self.class_names)} classes: "
            f"{named}; it is the mean over the other {defined}."
        )
        logger.warning(message)
        return message
