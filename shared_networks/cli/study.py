"""The label-efficiency study of a bundle: MAE against scratch, with paired bootstrap confidence intervals.

Command line::

    python -m shared_networks.cli.study --bundle_root bundles/btcv_mae_segmentation --dataset_dir DIR \\
        --output_dir runs/study [--fractions 1,0.5,0.25,0.1] [--seeds 0,1,2] [--mae_ckpt models/mae.pt] \\
        [--config_overrides quick] [--extra "--max_epochs 5"] [--pretrain_extra "--max_epochs 50"] \\
        [--train_extra "--warmup_epochs 1"] [--arms mae,scratch] [--n_resamples 2000] \\
        [--bootstrap_seed 0] [--subset_seed 0] [--tune_fraction 0.3 | --tune_folds 3]

See :mod:`shared_networks.study` for what it runs and writes; ``--tune_folds`` runs the cross-validation driver
(:func:`shared_networks.study.run_folds`), which runs the single study once per fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared_networks.cli import run_fire
from shared_networks.study import run_folds, run_study

__all__ = ["main", "study"]

OVERRIDE_OPTIONS = ("--extra", "--pretrain_extra", "--train_extra")


def study(
    bundle_root: str,
    dataset_dir: str,
    output_dir: str,
    fractions: Any = "1,0.5,0.25,0.1",
    seeds: Any = "0,1,2",
    mae_ckpt: str | None = None,
    config_overrides: Any = "",
    extra: str = "",
    pretrain_extra: str = "",
    train_extra: str = "",
    arms: Any = None,
    n_resamples: int = 2000,
    bootstrap_seed: int = 0,
    subset_seed: int = 0,
    tune_fraction: float = 0.0,
    tune_folds: int = 0,
) -> str:
    """Pre-train once (or take --mae_ckpt), fine-tune from the MAE encoder and from scratch on nested label fractions
    with several seeds, evaluate every model on the test split, and write runs.csv, summary.json (paired bootstrap
    CI of MAE - scratch per fraction), label_efficiency.png, study.md and study.html to output_dir. A second call
    with the same output_dir runs only what is not finished.

    Args:
        bundle_root: the bundle folder, e.g. bundles/cxr14_mae_classification.
        dataset_dir: the data set, as for the bundle's workflows.
        output_dir: folder of the study.
        fractions: fractions of the labelled training patients, e.g. 1,0.5,0.25,0.1.
        seeds: seeds of the runs, e.g. 0,1,2.
        mae_ckpt: an MAE checkpoint (pretrain.yaml's mae.pt) instead of pre-training.
        config_overrides: configs merged last into every workflow: names in the bundle's configs/ (quick) or paths,
            comma-separated.
        extra: "--key value ..." overrides of every command, e.g. "--max_epochs 5".
        pretrain_extra: overrides of the pre-training command only.
        train_extra: overrides of the fine-tuning and linear-probe commands only.
        arms: arms to run, comma-separated among mae, scratch, probe_mae, probe_random (default: all the bundle
            offers; the linear probes need configs/linear_probe.yaml).
        n_resamples: bootstrap resamples.
        bootstrap_seed: seed of the resamples.
        subset_seed: seed of the order in which patients enter the subsets.
        tune_fraction: 0 evaluates on the test split; a fraction in (0, 1) holds out that share of the training
            patients as the test split instead, to choose settings without reading the test split.
        tune_folds: K >= 2: K-fold cross-validation on the training patients instead (each fold pre-trains and
            trains in output_dir/fold<k>, summary.json pools the held-out predictions of the K folds; with
            --mae_ckpt, a path holding {fold}); the test split is not read.

    Returns:
        The path of summary.json.
    """
    options: dict[str, Any] = dict(
        fractions=fractions,
        seeds=seeds,
        mae_ckpt=mae_ckpt,
        config_overrides=config_overrides,
        extra=extra,
        pretrain_extra=pretrain_extra,
        train_extra=train_extra,
        arms=arms,
        n_resamples=int(n_resamples),
        bootstrap_seed=int(bootstrap_seed),
        subset_seed=int(subset_seed),
        tune_fraction=float(tune_fraction),
    )
    if int(tune_folds):
        run_folds(bundle_root, dataset_dir, output_dir, int(tune_folds), **options)
    else:
        run_study(bundle_root, dataset_dir, output_dir, **options)
    return str(output_dir).rstrip("/") + "/summary.json"


def fire_argv(argv: Sequence[str]) -> list[str]:
    """``--extra "--key value"`` as ``--extra=--key value``: fire reads a value starting with ``--`` as a flag."""
    out, i = [], 0
    argv = list(argv)
    while i < len(argv):
        if argv[i] in OVERRIDE_OPTIONS and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared_networks.cli.study --bundle_root DIR --dataset_dir DIR --output_dir DIR [...]``.

    Args:
        argv: command line arguments; ``None`` reads ``sys.argv``.
    """
    import sys

    run_fire(study, "shared_networks.cli.study", fire_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
