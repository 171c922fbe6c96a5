"""Label-efficiency study of a bundle: MAE pre-training against training from scratch, with paired bootstrap CIs.

One MAE pre-training (``pretrain.yaml``, or a given ``mae.pt``), then for each fraction of the labelled training cases
(nested, seeded subsets drawn by patient) and each seed: fine-tuning from the MAE encoder and from scratch with the same
subset, seed and schedule (``train.yaml`` with ``--pretrained_ckpt none`` for scratch) and, where the bundle has a
``linear_probe.yaml``, a linear probe on the MAE encoder and on a random one. Every model is evaluated on the unchanged
test split with ``evaluate.yaml``; the per-case (``per_case.csv``) or per-image (``predictions.csv``) values it writes
give the paired bootstrap CI of MAE - scratch. Every step is a ``python -m monai.bundle run`` command, as the bundle
docs give them, each subset passed as a datalist JSON in ``datalist_file``.

Command line (:mod:`shared_networks.cli.study`)::

    python -m shared_networks.cli.study --bundle_root bundles/cxr14_mae_classification --dataset_dir DIR \\
        --output_dir runs/study [--fractions 1,0.5,0.25,0.1] [--seeds 0,1,2] [--mae_ckpt models/mae.pt] \\
        [--config_overrides quick] [--extra "--max_epochs 5"]

Outputs in ``output_dir``: ``runs.csv`` (one row per run), ``summary.json`` (per fraction: mean and sd over seeds
per arm, the paired bootstrap 95 % CI of each difference per class and for the mean, and a verdict),
``label_efficiency.png``, ``study.md`` and ``study.html`` (a fragment for an HTML report). Finished runs are kept: a
second call runs only what is missing.

One concern per module, each importing only those above it in this list:

* :mod:`~shared_networks.study.subsets`: nested label fractions by patient, the held-out tuning split and folds.
* :mod:`~shared_networks.study.bootstrap`: resample counts, resampled means and AUCs, paired bootstrap, verdicts.
* :mod:`~shared_networks.study.evaluations`: ``per_case.csv`` / ``predictions.csv`` read back, pooled over folds.
* :mod:`~shared_networks.study.runs`: the ``monai.bundle run`` commands, pre-training, the runs and ``runs.csv``.
* :mod:`~shared_networks.study.summary`: ``summary.json``.
* :mod:`~shared_networks.study.render`: ``study.md``, ``study.html``, ``label_efficiency.png``.
* :mod:`~shared_networks.study.orchestrate`: one study, :func:`run_study`.
* :mod:`~shared_networks.study.crossval`: K-fold cross-validation, :func:`run_folds` (calls :func:`run_study`).
* :mod:`~shared_networks.study.levers`: settings of several studies against a reference on the same held-out images
  (a recipe search's lever table).
"""

from __future__ import annotations

from shared_networks.study.bootstrap import (
    VERDICTS,
    auc_by_group,
    auc_resampled,
    bootstrap_counts,
    counts_from_indices,
    mean_resampled,
    paired_bootstrap,
    verdict,
)
from shared_networks.study.crossval import run_folds
from shared_networks.study.evaluations import Evaluation, pool_evaluations, read_per_case, read_predictions
from shared_networks.study.orchestrate import run_study
from shared_networks.study.runs import ARMS, Run, parse_overrides, subprocess_runner
from shared_networks.study.subsets import group_key, nested_subsets, tuning_split
from shared_networks.study.summary import COMPARISONS, summarise, summarise_evaluations

__all__ = [
    "ARMS",
    "COMPARISONS",
    "VERDICTS",
    "Evaluation",
    "Run",
    "auc_by_group",
    "auc_resampled",
    "bootstrap_counts",
    "counts_from_indices",
    "group_key",
    "mean_resampled",
    "nested_subsets",
    "paired_bootstrap",
    "parse_overrides",
    "pool_evaluations",
    "read_per_case",
    "read_predictions",
    "run_folds",
    "run_study",
    "subprocess_runner",
    "summarise",
    "summarise_evaluations",
    "tuning_split",
    "verdict",
]
