"""Multi-label classification metrics and their report: ROC AUC per class where it is defined, per-image
probability CSVs (imported by :mod:`shared_networks.engine.metrics`).

MONAI's ``compute_roc_auc`` returns NaN (with a warning) for a class whose labels hold a single value, and its
macro average is then NaN too. Here such a class is *undefined*: left out of the mean and reported as ``None``
(``null`` in JSON), never as a number.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import IgniteMetricHandler
from monai.metrics import ROCAUCMetric, compute_roc_auc

from shared_networks.utils.files import atomic_write_text, write_json_atomic

__all__ = ["ClassificationReport", "MeanROCAUC", "MeanROCAUCMetric", "mean_defined", "roc_auc_per_class"]

logger = logging.getLogger("shared_networks.engine.metrics")  # logs under the metrics module's name


def roc_auc_per_class(y_pred: torch.Tensor, y: torch.Tensor) -> list[float | None]:
    """ROC AUC of each column of (N, K) scores against (N, K) binary labels (``monai.metrics.compute_roc_auc``).

    Returns:
        K values; ``None`` where the column's labels hold one class only (AUC undefined) or N is 0.
    """
    y_pred, y = torch.as_tensor(y_pred, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if y_pred.ndim != 2 or y.shape != y_pred.shape:
        raise ValueError(
            f"expected (N, K) scores and labels of one shape, got {tuple(y_pred.shape)} and {tuple(y.shape)}."
        )
    if y.shape[0] == 0:
        return [None] * y.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y values can not be all 0 or all 1": reported as None
        if y.shape[1] == 1:  # compute_roc_auc squeezes one column to a binary problem and returns a float
            values = [compute_roc_auc(y_pred[:, 0], y[:, 0])]
        else:
            values = compute_roc_auc(y_pred, y, average="none")
    return [float(v) if math.isfinite(v) else None for v in values]


def mean_defined(values: Sequence[float | None]) -> float | None:
    """Mean of the defined (not None, finite) values, or None when there is none."""
    defined = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(defined)) if defined else None


class MeanROCAUCMetric(ROCAUCMetric):
    """``monai.metrics.ROCAUCMetric`` whose aggregate is the mean AUC over the classes where it is defined.

    ``aggregate`` returns NaN (and logs a warning) only when no class has both labels in the accumulated data.

    In a distributed run (``torch.distributed`` initialised, e.g. ``configs/multi_gpu_train.yaml``) ``get_buffer``
    all-gathers the scores and labels of every rank first (MONAI's ``Cumulative``), so each rank computes the AUC of
    all evaluated images: an AUC is not the mean of per-rank AUCs. Every rank must call ``aggregate`` and hold at
    least one image (MONAI's ``DistributedSampler`` refuses a data set smaller than the number of ranks).
    """

    def __init__(self) -> None:
        super().__init__(average="none")

    def aggregate(self, average: str | None = None) -> float:
        """Mean AUC over the defined classes (``average`` is ignored)."""
        y_pred, y = self.get_buffer()
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError("y_pred and y must be PyTorch Tensors.")
        mean = mean_defined(roc_auc_per_class(y_pred.reshape(len(y_pred), -1), y.reshape(len(y), -1)))
        if mean is None:
            logger.warning("ROC AUC is undefined for every class: no class has both labels in the evaluated images.")
            return float("nan")
        return mean


class MeanROCAUC(IgniteMetricHandler):
    """Ignite metric handler of :class:`MeanROCAUCMetric` (the validation key metric of multi-label training).

    Args:
        output_transform: turns the engine output into ``(y_pred, y)``, e.g. ``from_engine(["pred", "label"])``.
    """

    def __init__(self, output_transform: Callable = lambda x: x) -> None:
        super().__init__(metric_fn=MeanROCAUCMetric(), output_transform=output_transform, save_details=False)


class ClassificationReport:
    """Writes per-image class probabilities (and labels) as CSV and, with labels, a ROC AUC summary JSON.

    Attach to a ``SupervisedEvaluator`` whose post-processing turns ``pred`` into probabilities (a sigmoid for
    multi-label). The CSV has the columns ``image`` (file name), one per class (probabilities) and, when the
    data have labels, ``label_<class>`` per class. The summary JSON holds, per class, the ROC AUC (``null`` when the
    evaluated images hold only one of its two labels) and the counts of positives and negatives, and the mean AUC
    over the defined classes. Both files are written atomically when the evaluator completes.

    Args:
        output_dir: folder of the files.
        class_names: names of the K output channels, in order.
        csv_name: name of the CSV file.
        summary_name: name of the summary JSON (written only when the data have labels); None for no summary.
        pred_key: key of the probabilities in the engine output.
        label_key: key of the labels in the engine output (absent for unlabelled inference data).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        csv_name: str = "predictions.csv",
        summary_name: str | None = "summary.json",
        pred_key: str = "pred",
        label_key: str = "label",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = [str(c) for c in class_names]
        self.csv_name = csv_name
        self.summary_name = summary_name
        self.pred_key = pred_key
        self.label_key = label_key
        self.images: list[str] = []
        self.probs: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.summary: dict | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record)
        engine.add_event_handler(Events.COMPLETED, self)

    def _reset(self, engine: Engine | None = None) -> None:
        self.images, self.probs, self.labels, self.summary = [], [], [], None

    def _record(self, engine: Engine) -> None:
        output = engine.state.output
        items = output if isinstance(output, list) else [output]
        for item in items:
            pred = np.asarray(torch.as_tensor(item[self.pred_key]).detach().cpu(), dtype=np.float64).reshape(-1)
            if pred.shape[0] != len(self.class_names):
                raise ValueError(f"prediction of {pred.shape[0]} values for {len(self.class_names)} classes.")
            meta = getattr(item.get("image"), "meta", {}) or {}
            name = meta.get("filename_or_obj", f"image{len(self.images)}")
            self.images.append(os.path.basename(str(name)))
            self.probs.append(pred)
            if item.get(self.label_key) is not None:
                label = torch.as_tensor(item[self.label_key]).detach().cpu().reshape(-1)
                self.labels.append(np.asarray(label, dtype=np.float64))

    def __call__(self, engine: Engine) -> None:
        with_labels = bool(self.labels)
        if with_labels and len(self.labels) != len(self.probs):
            raise ValueError(f"{len(self.labels)} of {len(self.probs)} evaluated images have labels.")
        header = ["image"] + self.class_names + ([f"label_{c}" for c in self.class_names] if with_labels else [])
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        for i, image in enumerate(self.images):
            values = [f"{v:.9g}" for v in self.probs[i]] + ([f"{v:g}" for v in self.labels[i]] if with_labels else [])
            writer.writerow([image] + values)
        csv_path = atomic_write_text(self.output_dir / self.csv_name, text.getvalue())
        engine.logger.info(f"{len(self.images)} image(s): probabilities written to {csv_path}")
        if not with_labels or self.summary_name is None:
            return
        probs, labels = np.stack(self.probs), np.stack(self.labels)
        aucs = roc_auc_per_class(torch.from_numpy(probs), torch.from_numpy(labels))
        positives = labels.sum(axis=0)
        per_class = {
            c: {"auc": aucs[j], "positives": int(positives[j]), "negatives": int(len(labels) - positives[j])}
            for j, c in enumerate(self.class_names)
        }
        self.summary = {
            "n_images": len(self.images),
            "mean_auc": mean_defined(aucs),
            "n_defined": sum(a is not None for a in aucs),
            "undefined": [c for c, a in zip(self.class_names, aucs, strict=True) if a is None],
            "per_class": per_class,
        }
        path = write_json_atomic(self.summary, self.output_dir / self.summary_name)
        engine.logger.info(
            f"mean ROC AUC {self.summary['mean_auc']} over {self.summary['n_defined']} defined classes "
            f"(undefined: {self.summary['undefined'] or '-'}); summary written to {path}"
        )
