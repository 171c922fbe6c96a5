"""K-fold cross-validation of the study on the training patients (:func:`run_folds`): one study per fold
(:func:`~shared_networks.study.orchestrate.run_study` with the fold held out), then one summary over the pooled
held-out predictions. The driver calls the single study, never the other way round."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared_networks.study.evaluations import Evaluation, pool_evaluations, read_evaluation
from shared_networks.study.orchestrate import run_study
from shared_networks.study.render import render_study
from shared_networks.study.runs import Run, Runner, read_runs, write_runs
from shared_networks.study.subsets import check_held_out
from shared_networks.study.summary import summarise_evaluations, write_summary

__all__ = ["run_folds"]

logger = logging.getLogger(__name__)


def _check_folds(folds: Any, mae_ckpt: str | os.PathLike | None) -> int:
    """K as an int; ``ValueError`` when K < 2 or one checkpoint is given for every fold."""
    folds = int(folds)
    if folds < 2:
        raise ValueError(f"tune_folds {folds!r} must be at least 2.")
    if mae_ckpt is not None and "{fold}" not in str(mae_ckpt):
        raise ValueError(
            f"mae_ckpt '{mae_ckpt}' is one checkpoint for every fold, so it was pre-trained on patients that some fold "
            "holds out: give a path with {fold} (each fold's own mae.pt), or none to pre-train in every fold."
        )
    return folds


def _pool_folds(
    out: Path, summaries: Sequence[Mapping[str, Any]]
) -> tuple[dict[Run, Evaluation], dict[Run, float], dict[float, tuple[int, int]], list[dict[str, Any]]]:
    """The folds' runs of this call pooled: per run its evaluations pooled over the folds and its seconds summed,
    per fraction the mean training items and patients, and the runs.csv rows of every fold (with a ``fold`` column)."""
    evaluations: dict[Run, list[Evaluation]] = {}
    walls: dict[Run, float] = {}
    sizes: dict[float, list[tuple[int, int]]] = {}
    rows = []
    # this call's runs (runs.csv may also hold those of an earlier call with more seeds or arms)
    plan = [
        Run(a, float(f), int(seed))
        for f, e in summaries[0]["fractions"].items()
        for a, v in e["arms"].items()
        for seed in v["seeds"]
    ]
    for k, fold_summary in enumerate(summaries):
        folder = out / f"fold{k}"
        records = read_runs(folder / "runs.csv")
        for f, entry in fold_summary["fractions"].items():
            sizes.setdefault(float(f), []).append((entry["n_train"], entry["n_train_groups"]))
        for run in plan:
            evaluations.setdefault(run, []).append(read_evaluation(folder / "runs" / run.name / "evaluate"))
            walls[run] = walls.get(run, 0.0) + float(records[run.key].get("wall_s") or 0)
            rows.append({"fold": k, **records[run.key]})
    pooled = {r: pool_evaluations(evaluations[r]) for r in plan}
    mean_sizes = {
        f: (round(float(np.mean([s[0] for s in v]))), round(float(np.mean([s[1] for s in v]))))
        for f, v in sizes.items()
    }
    return pooled, walls, mean_sizes, rows


def _fold_entries(out: Path, summaries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``summary.json``'s ``folds``: each fold's folder, test size, pre-training seconds and mean differences."""
    return [
        {
            "fold": k,
            "dir": str(out / f"fold{k}"),
            "n_test": s["n_test"],
            "pretrain_wall_s": s.get("pretrain_wall_s"),
            "fractions": {
                f: {n: c[s["metric"]]["mean"] for n, c in e["comparisons"].items()} for f, e in s["fractions"].items()
            },
        }
        for k, s in enumerate(summaries)
    ]


def _pooled_summary(
    out: Path, folds: int, summaries: Sequence[Mapping[str, Any]], options: Mapping[str, Any], started: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary over the folds' pooled held-out predictions, and the rows of the pooled runs.csv."""
    pooled, walls, sizes, rows = _pool_folds(out, summaries)
    summary = summarise_evaluations(
        pooled,
        walls,
        sizes,
        int(options.get("n_resamples", 2000)),
        int(options.get("bootstrap_seed", 0)),
        bundle=summaries[0]["bundle"],
    )
    summary["notes"].append(
        f"{folds}-fold cross-validation on the training patients: each arm's values pool the held-out predictions of "
        f"the {folds} folds' models (an AUC is the mean of the folds' AUCs; the bootstrap resamples within each "
        "fold); training items and patients are the mean over the folds."
    )
    summary["tune_fraction"] = 0.0
    summary["tune_folds"] = folds
    summary["folds"] = _fold_entries(out, summaries)
    summary["runs_this_call"] = sum(s["runs_this_call"] for s in summaries)
    pre = [s["pretrain_wall_s"] for s in summaries if s.get("pretrain_wall_s") is not None]
    if pre:
        summary["pretrain_wall_s"] = round(sum(pre), 1)
    summary["wall_s_this_call"] = round(time.monotonic() - started, 1)
    return summary, rows


def run_folds(
    bundle_root: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    folds: int,
    mae_ckpt: str | os.PathLike | None = None,
    runner: Runner | None = None,
    **options: Any,
) -> dict[str, Any]:
    """K-fold cross-validation of the study on the training patients: :func:`run_study` with ``tune_folds=folds`` and
    ``tune_fold=k`` in ``output_dir/fold<k>`` for every fold (each pre-trains its own MAE on its training
    patients), then one summary over the pooled held-out predictions: every training patient is evaluated once, by
    the models of the fold that held it out. The paired bootstrap resamples the images (or cases) within each fold;
    a per-case metric (Dice, HD95) is averaged over all of them, an AUC is the mean of the folds' AUCs (each fold's
    images ranked by its own models, :func:`~shared_networks.study.bootstrap.auc_by_group`). ``summary.json`` also
    lists each fold's own summary.

    Args:
        folds: K >= 2.
        mae_ckpt: ``None`` pre-trains in every fold; else a path holding ``{fold}`` (e.g.
            ``runs/cv/fold{fold}/pretrain/models/mae.pt``), each fold's MAE (one checkpoint for every fold would
            have seen the held-out images).
        options: the other arguments of :func:`run_study` (a ``tune_fraction`` other than 0 is refused: the folds
            hold patients out instead).

    Raises:
        ValueError: ``folds`` < 2, ``mae_ckpt`` without ``{fold}``, or a ``tune_fraction``.
    """
    check_held_out(options.get("tune_fraction", 0.0), folds)
    started = time.monotonic()
    folds = _check_folds(folds, mae_ckpt)
    out = Path(output_dir).expanduser().resolve()
    summaries = []
    for k in range(folds):
        logger.info("fold %d of %d (%s)", k, folds, out / f"fold{k}")
        ckpt = None if mae_ckpt is None else str(mae_ckpt).replace("{fold}", str(k))
        summaries.append(
            run_study(
                bundle_root,
                dataset_dir,
                out / f"fold{k}",
                mae_ckpt=ckpt,
                tune_folds=folds,
                tune_fold=k,
                runner=runner,
                **options,
            )
        )
    summary, rows = _pooled_summary(out, folds, summaries, options, started)
    write_runs(out / "runs.csv", rows)
    write_summary(summary, out)
    render_study(summary, out)
    logger.info(
        "cross-validated study finished: %d folds in %.1f min; %s",
        folds,
        summary["wall_s_this_call"] / 60,
        out / "summary.json",
    )
    return summary
