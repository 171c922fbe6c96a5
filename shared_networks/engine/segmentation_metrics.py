"""Segmentation metrics and their report: Dice and HD95 in mm with fixed conventions for empty structures, per-case
CSV and summary JSON (imported by :mod:`shared_networks.engine.metrics`, whose docstring gives the conventions).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import HausdorffDistance, IgniteMetricHandler
from monai.metrics import HausdorffDistanceMetric
from monai.metrics.utils import prepare_spacing
from monai.utils import MetricReduction

from shared_networks.engine.classification_metrics import mean_defined
from shared_networks.utils.files import atomic_write_text, write_json_atomic

__all__ = [
    "BRATS_HD95_PENALTY_MM",
    "STRUCTURE_STATES",
    "HausdorffDistanceMM",
    "MetricsReport",
    "PenalizedHausdorffDistanceMetric",
    "image_diagonal_mm",
    "structure_status",
]

BRATS_HD95_PENALTY_MM = 373.13  # HD95 of a missed or false-positive region in the BraTS challenges (mm)
# per case and class: label and prediction non-empty, label only, prediction only, both empty
STRUCTURE_STATES = ("detected", "missed", "false_positive", "both_empty")

logger = logging.getLogger("shared_networks.engine.metrics")  # logs under the metrics module's name


def _foreground(x: torch.Tensor, include_background: bool) -> torch.Tensor:
    """(B, C, *spatial) binarised masks -> (B, C) booleans (C - 1 columns without background): any foreground."""
    x = torch.as_tensor(x)
    if not include_background:
        x = x[:, 1:]
    return x.reshape(x.shape[0], x.shape[1], -1).any(dim=-1).as_subclass(torch.Tensor)  # non-zero anywhere


def structure_status(y_pred: torch.Tensor, y: torch.Tensor, include_background: bool = False) -> list[list[str]]:
    """Which of :data:`STRUCTURE_STATES` each class of each case is in.

    Args:
        y_pred: (B, C, H, W[, Z]) binarised prediction (one-hot classes or per-region masks).
        y: (B, C, H, W[, Z]) binarised label.
        include_background: False: channel 0 is the background and is left out (as in MONAI's metrics).

    Returns:
        B lists of C (C - 1 without background) states: ``detected`` (label and prediction non-empty), ``missed``
        (label only), ``false_positive`` (prediction only) or ``both_empty``.
    """
    if tuple(y_pred.shape) != tuple(y.shape) or y.ndim < 3:
        raise ValueError(
            f"expected (B, C, spatial...) prediction and label of one shape, got {tuple(y_pred.shape)} "
            f"and {tuple(y.shape)}."
        )
    pred, label = _foreground(y_pred, include_background).tolist(), _foreground(y, include_background).tolist()
    states = {(True, True): "detected", (True, False): "missed", (False, True): "false_positive"}
    return [
        [states.get((t, p), "both_empty") for t, p in zip(ts, ps, strict=True)]
        for ts, ps in zip(label, pred, strict=True)
    ]


def image_diagonal_mm(spatial_shape: Sequence[int], spacing: float | Sequence[float] | None = None) -> float:
    """Diagonal of an image's field of view in mm: ``sqrt(sum((n_i * s_i) ** 2))``.

    Args:
        spatial_shape: voxels along each axis, e.g. (H, W, Z).
        spacing: mm per voxel along each axis, one number for all axes, or None for 1.
    """
    n = np.asarray(spatial_shape, dtype=np.float64)
    s = np.broadcast_to(np.asarray(1.0 if spacing is None else spacing, dtype=np.float64), n.shape)
    return float(np.sqrt(np.sum((n * s) ** 2)))


def _check_penalty(penalty_mm: float | str) -> float | str:
    if isinstance(penalty_mm, str) and penalty_mm.strip().lower() == "diagonal":
        return "diagonal"
    try:
        value = float(penalty_mm)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"hd95_penalty_mm must be a positive distance in mm or 'diagonal' (the image diagonal of each case), "
            f"got {penalty_mm!r} (setting hd95_penalty_mm of the bundle's configs/train.yaml)."
        )
    return value


class PenalizedHausdorffDistanceMetric(HausdorffDistanceMetric):
    """``monai.metrics.HausdorffDistanceMetric`` with a penalty for a missed or a false-positive structure.

    Per case and class: where label and prediction both hold foreground, MONAI's (percentile) Hausdorff distance;
    where only one of them does (a missed structure or a false positive), ``penalty_mm``; where both are empty, NaN
    (no surface to measure: left out of the means by MONAI's reductions and counted by :class:`MetricsReport`).
    MONAI itself returns NaN or inf in the one-sided cases, which a NaN-skipping mean would drop, rewarding a
    model for missing a structure.

    Distances are in the units of ``spacing`` (pass it to ``__call__``, e.g. mm from the image's affine, as
    :class:`HausdorffDistanceMM` does); without it, in voxels.

    Args:
        include_background: whether channel 0 is a class.
        percentile: percentile of the surface distances (95: HD95); None: the maximum.
        penalty_mm: the distance of a missed or false-positive structure, in the units of ``spacing``, or
            ``"diagonal"``: the case's image diagonal, :func:`image_diagonal_mm` of its spatial shape and spacing.
        distance_metric: ``euclidean``, ``chessboard`` or ``taxicab``.
        directed: directed (prediction to label) distance instead of the symmetric one.
        reduction: reduction of ``aggregate`` (over the values that are not NaN).
        get_not_nans: whether ``aggregate`` also returns the count of values that are not NaN.
    """

    def __init__(
        self,
        include_background: bool = False,
        percentile: float | None = 95.0,
        penalty_mm: float | str = "diagonal",
        distance_metric: str = "euclidean",
        directed: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(
            include_background=include_background,
            distance_metric=distance_metric,
            percentile=percentile,
            directed=directed,
            reduction=reduction,
            get_not_nans=get_not_nans,
        )
        self.penalty_mm = _check_penalty(penalty_mm)

    def penalties(self, y: torch.Tensor, spacing: Any = None) -> torch.Tensor:
        """(B, 1) penalty of each case of a (B, C, *spatial) label, for ``spacing`` as ``__call__`` takes it."""
        if self.penalty_mm != "diagonal":
            return torch.full((y.shape[0], 1), float(self.penalty_mm))
        spacings = prepare_spacing(spacing=spacing, batch_size=y.shape[0], img_dim=y.ndim - 2)
        return torch.tensor([[image_diagonal_mm(y.shape[2:], s)] for s in spacings])

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        with warnings.catch_warnings():  # "the prediction of class 1 is all 0": handled below
            warnings.filterwarnings("ignore", message=r"the (ground truth|prediction) of class .* is all 0")
            hd = super()._compute_tensor(y_pred, y, **kwargs)  # (B, C)
        pred = _foreground(y_pred, self.include_background).to(hd.device)
        label = _foreground(y, self.include_background).to(hd.device)
        penalty = self.penalties(y, kwargs.get("spacing")).to(hd).expand_as(hd)
        hd = torch.where(pred ^ label, penalty, hd)
        return torch.where(~pred & ~label, torch.full_like(hd, float("nan")), hd)


class HausdorffDistanceMM(HausdorffDistance):
    """Handler of :class:`PenalizedHausdorffDistanceMetric` in millimetres: each label's own voxel spacing is passed on.

    MONAI's ``HausdorffDistance`` handler calls its metric without spacing (distances in voxels) and returns NaN for
    a missed structure. Here every (pred, label) pair is measured with the spacing read from the label's affine (a
    ``MetaTensor``), so HD95 at native resolution is in mm, and a missed or false-positive structure costs
    ``penalty_mm`` (``"diagonal"``: that label's image diagonal in mm).

    Args:
        include_background: whether channel 0 is a class.
        percentile: percentile of the surface distances (95: HD95); None: the maximum.
        penalty_mm: HD of a missed or false-positive structure in mm, or ``"diagonal"``.
        distance_metric: ``euclidean``, ``chessboard`` or ``taxicab``.
        directed: directed (prediction to label) distance instead of the symmetric one.
        reduction: reduction of the engine metric (over the values that are not NaN: both-empty structures).
        output_transform: turns the engine output into ``(y_pred, y)``, e.g. ``from_engine(["pred", "label"])``.
        save_details: keep the per-case, per-class values in ``engine.state.metric_details`` (for MetricsReport).
    """

    def __init__(
        self,
        include_background: bool = False,
        percentile: float | None = 95.0,
        penalty_mm: float | str = "diagonal",
        distance_metric: str = "euclidean",
        directed: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = PenalizedHausdorffDistanceMetric(
            include_background=include_background,
            percentile=percentile,
            penalty_mm=penalty_mm,
            distance_metric=distance_metric,
            directed=directed,
            reduction=reduction,
        )
        IgniteMetricHandler.__init__(
            self, metric_fn=metric_fn, output_transform=output_transform, save_details=save_details
        )

    def update(self, output: Sequence) -> None:
        y_pred, y = output
        for p, t in zip(y_pred, y, strict=True):
            spacing = None
            if hasattr(t, "pixdim"):
                spacing = [float(s) for s in t.pixdim[: t.ndim - 1]]
            self.metric_fn(p.unsqueeze(0), t.unsqueeze(0), spacing=spacing)


class MetricsReport:
    """Writes a per-case CSV and a summary JSON of per-class segmentation metrics when an evaluator completes.

    Uses the evaluator's ``metric_details`` (per case, per class, from handlers created with ``save_details=True``)
    and, per case and class, the state of the structure in the engine output (:func:`structure_status`: detected,
    missed, false positive, both empty). With the conventions of this module (Dice of MONAI's
    ``DiceMetric(ignore_empty=False)``, :class:`HausdorffDistanceMM`) the only values left out of a mean are the
    HD95 of both-empty structures; any other NaN is counted in ``n_excluded`` and logged as a warning.

    ``per_case.csv``: ``case``, ``<metric>_<class>`` per metric and class, ``status_<class>`` per class, and the
    case's counts ``missed``, ``false_positives``, ``both_empty``. ``summary.json``: ``n_cases``, ``cases``; per
    metric, ``mean`` (over classes of the per-class means) and ``per_class`` (``mean``, ``n`` values averaged,
    ``n_excluded``); ``structures``: per class and in total, the counts of each state (``detected``, ``missed``,
    ``false_positives``, ``both_empty``).

    Args:
        output_dir: folder for ``per_case.csv`` and ``summary.json``.
        class_names: names of the reported classes (background excluded), in channel order.
        metric_names: metric keys to report (as in ``engine.state.metric_details``).
        include_background: whether channel 0 of ``pred`` and ``label`` is a class (True for per-region sigmoid
            outputs; False for one-hot classes whose channel 0 is the background), as the metrics' own setting.
        pred_key: key of the binarised prediction in the engine output.
        label_key: key of the binarised label in the engine output.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        metric_names: Sequence[str],
        include_background: bool = False,
        pred_key: str = "pred",
        label_key: str = "label",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.metric_names = list(metric_names)
        self.include_background = include_background
        self.pred_key = pred_key
        self.label_key = label_key
        self.cases: list[str] = []
        self.status: list[list[str]] = []
        self.summary: dict | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record_cases)
        engine.add_event_handler(Events.COMPLETED, self)

    def _reset(self, engine: Engine | None = None) -> None:
        self.cases, self.status, self.summary = [], [], None

    def _record_cases(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        items = batch if isinstance(batch, list) else [batch]
        outputs = output if isinstance(output, list) else [output]
        for item in items:
            meta = getattr(item["image"], "meta", {})
            name = meta.get("filename_or_obj", f"case{len(self.cases)}")
            self.cases.append(os.path.basename(str(name if isinstance(name, str) else name[0])))
        for out in outputs:
            pred, label = torch.as_tensor(out[self.pred_key]), torch.as_tensor(out[self.label_key])
            status = structure_status(pred.unsqueeze(0), label.unsqueeze(0), self.include_background)[0]
            if len(status) != len(self.class_names):
                raise ValueError(
                    f"'{self.pred_key}' has {len(status)} classes (include_background={self.include_background}), "
                    f"expected {len(self.class_names)}: {self.class_names}."
                )
            self.status.append(status)

    def __call__(self, engine: Engine) -> None:
        n, names = len(self.cases), self.class_names
        details = {m: np.asarray(engine.state.metric_details[m].cpu(), dtype=float) for m in self.metric_names}
        for m, d in details.items():
            if d.shape != (n, len(names)):
                raise ValueError(f"metric '{m}' has shape {d.shape}, expected ({n}, {len(names)}): cases, classes.")
        if len(self.status) != n:
            raise ValueError(f"{len(self.status)} engine outputs for {n} cases.")
        status = np.asarray(self.status, dtype=object).reshape(n, len(names))
        counts = {s: (status == s).sum(axis=1) for s in STRUCTURE_STATES}  # per case
        slugs = [c.replace(" ", "_") for c in names]
        header = (
            ["case"]
            + [f"{m}_{c}" for m in self.metric_names for c in slugs]
            + [f"status_{c}" for c in slugs]
            + ["missed", "false_positives", "both_empty"]
        )
        rows = [",".join(header)]
        for i, case in enumerate(self.cases):
            values = [_fmt(details[m][i, j]) for m in self.metric_names for j in range(len(names))]
            tail = [str(int(counts[s][i])) for s in ("missed", "false_positive", "both_empty")]
            rows.append(",".join([case] + values + list(status[i]) + tail))
        atomic_write_text(self.output_dir / "per_case.csv", "\n".join(rows) + "\n")

        def tally(col: np.ndarray) -> dict[str, int]:
            return {_plural(s): int((col == s).sum()) for s in STRUCTURE_STATES}

        summary: dict = {"n_cases": n, "cases": list(self.cases)}
        for m, d in details.items():
            per_class = {}
            for j, c in enumerate(names):
                finite = np.isfinite(d[:, j])
                unexpected = [self.cases[i] for i in np.flatnonzero(~finite) if status[i, j] != "both_empty"]
                if unexpected:
                    logger.warning(
                        f"{m} of '{c}' is not finite in case(s) {unexpected}, where the class is not "
                        "empty in both label and prediction: left out of its mean."
                    )
                col = d[finite, j]
                per_class[c] = {
                    "mean": float(col.mean()) if col.size else None,
                    "n": int(col.size),
                    "n_excluded": int(n - col.size),
                }
            summary[m] = {"mean": mean_defined([v["mean"] for v in per_class.values()]), "per_class": per_class}
        summary["structures"] = {"per_class": {c: tally(status[:, j]) for j, c in enumerate(names)}, **tally(status)}
        path = write_json_atomic(summary, self.output_dir / "summary.json")
        self.summary = summary
        engine.logger.info(f"metrics written to {path} and per_case.csv")
        for m in self.metric_names:
            engine.logger.info(f"{m}: mean over classes {summary[m]['mean']}")
        s = summary["structures"]
        engine.logger.info(
            f"structures (case x class): {s['missed']} missed, {s['false_positives']} false positive(s), "
            f"{s['both_empty']} empty in label and prediction, {s['detected']} detected"
        )


def _plural(state: str) -> str:
    return "false_positives" if state == "false_positive" else state


def _fmt(v: float) -> str:
    return "nan" if not np.isfinite(v) else f"{v:.6g}"
