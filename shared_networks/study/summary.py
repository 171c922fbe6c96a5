"""``summary.json`` of the study: per label fraction, each arm's mean and sd over seeds and, for each compared pair of
arms, the paired bootstrap CI of the difference of their seed-averaged values per class and for the mean, with a
verdict; and the label efficiency: MAE at each smaller fraction against scratch at the largest one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared_networks.study.bootstrap import CONFIDENCE, paired_bootstrap
from shared_networks.study.evaluations import Evaluation, read_evaluation, run_metrics
from shared_networks.study.runs import ARM_LABELS, Run, read_runs
from shared_networks.study.subsets import group_key
from shared_networks.utils.files import write_json_atomic

__all__ = [
    "COMPARISONS",
    "FEW_TEST_CASES",
    "HIGHER_IS_BETTER",
    "LABEL_EFFICIENCY",
    "summarise",
    "summarise_evaluations",
    "write_summary",
]

COMPARISONS = (("mae", "scratch"), ("probe_mae", "probe_random"))
"""Paired differences reported (first arm minus second)."""
LABEL_EFFICIENCY = ("mae", "scratch")
"""Label efficiency: the first arm at each smaller fraction against the second arm at the largest fraction."""
HIGHER_IS_BETTER = {"dice": True, "auc": True, "hd95": False}
FEW_TEST_CASES = 10  # below this, the summary warns that the bootstrap CI understates the uncertainty


def _mean_sd(values: Sequence[float | None]) -> dict[str, Any]:
    ok = [v for v in values if v is not None and math.isfinite(v)]
    return {
        "per_seed": list(values),
        "mean": float(np.mean(ok)) if ok else None,
        "sd": float(np.std(ok, ddof=1)) if len(ok) > 1 else None,
    }


def _seed_average(evaluations: Sequence[Evaluation], metric: str) -> np.ndarray:
    """The per-case values (or probabilities) of one arm averaged over its seeds, NaN where no seed defines them."""
    stack = np.stack([e.values[metric] for e in evaluations])
    ok = np.isfinite(stack)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok.any(0), np.where(ok, stack, 0.0).sum(0) / np.maximum(ok.sum(0), 1), np.nan)


def summarise(
    output_dir: Path,
    plan: Sequence[Run],
    subsets: Mapping[float, Sequence[Any]],
    n_resamples: int,
    seed: int,
    bundle: str = "",
) -> dict[str, Any]:
    """``summary.json``'s content from the evaluations of the finished runs of ``plan``."""
    evaluations = {r: read_evaluation(output_dir / "runs" / r.name / "evaluate") for r in plan}
    records = read_runs(output_dir / "runs.csv")
    walls = {r: float(records[r.key].get("wall_s") or 0) for r in plan}
    sizes = {f: (len(items), len({group_key(i) for i in items})) for f, items in subsets.items()}
    return summarise_evaluations(evaluations, walls, sizes, n_resamples, seed, bundle)


def _check_same_test_split(evaluations: Sequence[Evaluation]) -> None:
    """``ValueError`` naming the files when two evaluations differ in their test cases, classes or labels."""
    first = evaluations[0]
    for ev in evaluations:
        if ev.cases != first.cases or ev.class_names != first.class_names:
            raise ValueError(
                f"'{ev.path}' evaluates other test cases or classes than '{first.path}': the test split "
                "must be the same for every run."
            )
        if ev.labels is not None and not np.array_equal(ev.labels, first.labels):
            raise ValueError(f"'{ev.path}' holds other test labels than '{first.path}'.")


def _summary_head(
    first: Evaluation, metrics: list[str], plan: Sequence[Run], n_resamples: int, seed: int, bundle: str
) -> dict[str, Any]:
    """What ``summary.json`` says before its fractions: the task, metrics, test split, bootstrap and arms."""
    task = first.task
    summary: dict[str, Any] = {
        "bundle": bundle,
        "task": task,
        "metric": "auc" if task == "classification" else "dice",
        "metrics": metrics,
        "higher_is_better": {m: HIGHER_IS_BETTER[m] for m in metrics},
        "class_names": first.class_names,
        "n_test": len(first.cases),
        "n_resamples": n_resamples,
        "bootstrap_seed": seed,
        "confidence": CONFIDENCE,
        "fractions": {},
        "arm_labels": {a: ARM_LABELS[a] for a in dict.fromkeys(r.arm for r in plan)},
        "total_run_wall_s": 0.0,
        "notes": [],
    }
    if len(first.cases) < FEW_TEST_CASES:
        summary["notes"].append(
            f"only {len(first.cases)} test case(s): resampling so few cases understates the uncertainty (with one "
            "case the CI collapses to the observed difference); read the verdicts as a smoke test, not a result."
        )
    return summary


def _comparison(
    entry: dict[str, Any] | None,
    pair: tuple[str, str],
    per_arm: Mapping[str, Sequence[Evaluation]],
    summary: Mapping[str, Any],
    first: Evaluation,
) -> dict[str, Any]:
    """The paired bootstrap of one pair of arms, per metric, on their seed-averaged values; each arm's own value and
    CI of the mean land in ``entry["arms"]`` (not kept when ``entry`` is ``None``)."""
    a, b = pair
    comparison: dict[str, Any] = {}
    for m in summary["metrics"]:
        result = paired_bootstrap(
            _seed_average(per_arm[a], m),
            _seed_average(per_arm[b], m),
            first.class_names,
            "auc" if m == "auc" else "mean",
            labels=first.labels,
            n_resamples=summary["n_resamples"],
            seed=summary["bootstrap_seed"],
            higher_is_better=HIGHER_IS_BETTER[m],
            groups=first.groups,
        )
        arms_ci = result.pop("arms")
        if entry is not None:
            entry["arms"][a][m]["seed_averaged"] = arms_ci["a"]
            entry["arms"][b][m]["seed_averaged"] = arms_ci["b"]
        comparison[m] = result
    comparison["verdict"] = comparison[summary["metric"]]["mean"]["verdict"]
    return comparison


def _fraction_entry(
    runs: Sequence[Run],
    evaluations: Mapping[Run, Evaluation],
    size: tuple[int, int],
    summary: Mapping[str, Any],
    first: Evaluation,
) -> dict[str, Any]:
    """One fraction of ``summary.json``: its training size, each arm's metrics over seeds, each comparison."""
    arms = list(dict.fromkeys(r.arm for r in runs))
    entry: dict[str, Any] = {"n_train": size[0], "n_train_groups": size[1], "arms": {}, "comparisons": {}}
    per_arm = {a: [evaluations[r] for r in runs if r.arm == a] for a in arms}
    for a in arms:
        entry["arms"][a] = {"seeds": [r.seed for r in runs if r.arm == a]}
        for m in summary["metrics"]:
            entry["arms"][a][m] = _mean_sd([run_metrics(ev)[m] for ev in per_arm[a]])
    for a, b in COMPARISONS:
        if a in per_arm and b in per_arm:
            entry["comparisons"][f"{a} - {b}"] = _comparison(entry, (a, b), per_arm, summary, first)
    return entry


def _label_efficiency(
    plan: Sequence[Run], evaluations: Mapping[Run, Evaluation], summary: Mapping[str, Any], first: Evaluation
) -> dict[str, Any]:
    """Per smaller fraction f: the MAE arm trained on f of the labels against scratch trained on the largest fraction,
    paired over the same test cases (both arms averaged over their seeds): does MAE match full labels with fewer?"""
    a, b = LABEL_EFFICIENCY
    fractions = sorted({r.fraction for r in plan}, reverse=True)
    top = fractions[0]
    reference = [evaluations[r] for r in plan if r.fraction == top and r.arm == b]
    out: dict[str, Any] = {}
    for f in fractions[1:]:
        runs = [evaluations[r] for r in plan if r.fraction == f and r.arm == a]
        if runs and reference:
            key = f"{a} at {f:g} - {b} at {top:g}"
            out[f"{f:g}"] = {"comparison": key, **_comparison(None, (a, b), {a: runs, b: reference}, summary, first)}
    return out


def summarise_evaluations(
    evaluations: Mapping[Run, Evaluation],
    walls: Mapping[Run, float],
    sizes: Mapping[float, tuple[int, int]],
    n_resamples: int,
    seed: int,
    bundle: str = "",
) -> dict[str, Any]:
    """``summary.json``'s content from each run's evaluation (``walls``: its seconds; ``sizes``: per fraction the
    training items and patients)."""
    plan = list(evaluations)
    first = next(iter(evaluations.values()))
    _check_same_test_split(list(evaluations.values()))
    metrics = [m for m in ("dice", "hd95", "auc") if all(m in ev.values for ev in evaluations.values())]
    summary = _summary_head(first, metrics, plan, n_resamples, seed, bundle)
    summary["total_run_wall_s"] = round(sum(walls[r] for r in plan), 1)
    for f in sorted({r.fraction for r in plan}, reverse=True):
        runs = [r for r in plan if r.fraction == f]
        summary["fractions"][f"{f:g}"] = _fraction_entry(runs, evaluations, sizes[f], summary, first)
    summary["label_efficiency"] = _label_efficiency(plan, evaluations, summary, first)
    return summary


def write_summary(summary: Mapping[str, Any], output_dir: Path) -> Path:
    """``output_dir/summary.json``, written atomically."""
    path = output_dir / "summary.json"
    write_json_atomic(summary, path)
    return path
