"""Metrics and metric reports of the evaluators: segmentation (Dice and HD95 in mm with fixed conventions for empty
structures, per-case CSV and summary JSON) and multi-label classification (ROC AUC per class where defined, per-image
probability CSVs).

Segmentation conventions, per case and per class (a *structure* is one class's foreground in one case):

==========================  ============  ==================================
label / prediction          Dice          HD95
==========================  ============  ==================================
both non-empty              as computed   as computed (mm)
label only (missed)         0             penalty
prediction only (false +)   0             penalty
both empty                  1             excluded (NaN), counted
==========================  ============  ==================================

Dice is MONAI's ``DiceMetric(ignore_empty=False)``; HD95 is :class:`PenalizedHausdorffDistanceMetric`. The penalty is
a fixed distance in mm (the BraTS challenges use 373.13 mm) or ``"diagonal"``: the diagonal of that case's image in
mm. Skipping a structure therefore always costs the penalty, and a false positive is never free.

MONAI's ``compute_roc_auc`` returns NaN (with a warning) for a class whose labels hold a single value, and its
macro average is then NaN too. Here such a class is *undefined*: left out of the mean and reported as ``None``
(``null`` in JSON), never as a number.

The metrics live in two modules, their names importable from here:
:mod:`~shared_networks.engine.segmentation_metrics` and :mod:`~shared_networks.engine.classification_metrics`.
"""

from __future__ import annotations

from shared_networks.engine.classification_metrics import (
    ClassificationReport,
    MeanROCAUC,
    MeanROCAUCMetric,
    mean_defined,
    roc_auc_per_class,
)
from shared_networks.engine.segmentation_metrics import (
    BRATS_HD95_PENALTY_MM,
    STRUCTURE_STATES,
    HausdorffDistanceMM,
    MetricsReport,
    PenalizedHausdorffDistanceMetric,
    image_diagonal_mm,
    structure_status,
)

__all__ = [
    "BRATS_HD95_PENALTY_MM",
    "STRUCTURE_STATES",
    "ClassificationReport",
    "HausdorffDistanceMM",
    "MeanROCAUC",
    "MeanROCAUCMetric",
    "MetricsReport",
    "PenalizedHausdorffDistanceMetric",
    "image_diagonal_mm",
    "mean_defined",
    "roc_auc_per_class",
    "structure_status",
]
