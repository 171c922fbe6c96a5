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
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared_networks.utils.files import atomic_write_text, write_json_atomic

__all__ = [
    "ARMS",
    "COMPARISONS",
    "Run",
    "auc_resampled",
    "bootstrap_counts",
    "counts_from_indices",
    "group_key",
    "mean_resampled",
    "nested_subsets",
    "paired_bootstrap",
    "parse_overrides",
    "read_per_case",
    "read_predictions",
    "run_study",
    "subprocess_runner",
    "summarise",
    "tuning_split",
    "verdict",
]

logger = logging.getLogger(__name__)

ARMS = ("mae", "scratch", "probe_mae", "probe_random")
"""Fine-tuning from the MAE encoder, from scratch; linear probe on the MAE encoder, on a random encoder."""
COMPARISONS = (("mae", "scratch"), ("probe_mae", "probe_random"))
"""Paired differences reported (first arm minus second)."""
ARM_LABELS = {
    "mae": "fine-tuned, MAE encoder",
    "scratch": "fine-tuned, from scratch",
    "probe_mae": "linear probe, MAE encoder",
    "probe_random": "linear probe, random encoder",
}
MODEL_FILES = {
    "mae": "model.pt",
    "scratch": "model.pt",
    "probe_mae": "linear_probe.pt",
    "probe_random": "linear_probe.pt",
}
# (linear_probe.yaml's model_file is linear_probe.pt)
HIGHER_IS_BETTER = {"dice": True, "auc": True, "hd95": False}
VERDICTS = ("MAE ahead", "scratch ahead", "difference within noise (CI contains 0)")
CONFIDENCE = 0.95
FEW_TEST_CASES = 10  # below this, the summary warns that the bootstrap CI understates the uncertainty
_CHUNK = 4_000_000  # resample counts held at once (resamples x cases)

Runner = Callable[[Sequence[str], Path], None]
"""Runs ``python -m monai.bundle run`` with the given arguments (after ``run``), its output to the log file; raises on
failure."""


# subsets


def group_key(item: Mapping[str, Any]) -> str:
    """The unit of sampling of a datalist item: its patient (chest X-rays), else its case, else its image."""
    for key in ("patient", "case"):
        value = item.get(key)
        if isinstance(value, str) and value:
            return f"{key}:{value}"
    image = item.get("image")
    return "image:" + (image if isinstance(image, str) else " + ".join(map(str, image)))


def _fraction_size(fraction: float, n: int) -> int:
    """``fraction`` of ``n`` groups, half rounded up, at least 1."""
    return max(1, min(n, int(math.floor(fraction * n + 0.5))))


def _group_order(items: Sequence[Mapping[str, Any]], seed: int) -> list[str]:
    """The groups (:func:`group_key`) of ``items``, shuffled once with ``numpy.random.default_rng(seed)``."""
    groups = list(dict.fromkeys(group_key(i) for i in items))
    return [groups[i] for i in np.random.default_rng(seed).permutation(len(groups))]


def check_fractions(fractions: Iterable[float]) -> list[float]:
    """The fractions, each in (0, 1], largest first, without repeats (``ValueError`` naming a bad one)."""
    out = []
    for f in fractions:
        value = float(f)
        if not 0.0 < value <= 1.0:
            raise ValueError(f"label fraction {f!r} is outside (0, 1].")
        if value not in out:
            out.append(value)
    if not out:
        raise ValueError("no label fraction given.")
    return sorted(out, reverse=True)


def nested_subsets(
    items: Sequence[Mapping[str, Any]], fractions: Iterable[float], seed: int = 0
) -> dict[float, list[Mapping[str, Any]]]:
    """Nested, seeded subsets of ``items`` drawn by patient: ``{fraction: items}``.

    The groups (:func:`group_key`) are shuffled once with ``numpy.random.default_rng(seed)``; the subset of fraction
    ``f`` is the first ``max(1, round(f * n_groups))`` groups of that order, so a smaller fraction's subset lies inside
    every larger one's and a patient's images are never split. Items keep their order in ``items``.
    """
    fractions = check_fractions(fractions)
    if not items:
        raise ValueError("no training items to draw subsets from.")
    order = _group_order(items, seed)
    out = {}
    for f in fractions:
        chosen = set(order[: _fraction_size(f, len(order))])
        out[f] = [i for i in items if group_key(i) in chosen]
    return out


def tuning_split(
    datalist: Mapping[str, Sequence[Mapping[str, Any]]],
    fraction: float,
    seed: int = 0,
    folds: int = 0,
    fold: int = 0,
) -> dict[str, list[Mapping[str, Any]]]:
    """The datalist for choosing settings without the test split: ``fraction`` of the training patients (seeded,
    :func:`group_key`) become the test split, the rest stay training; validation is unchanged and the real test
    items are left out (no run of the study reads them). The held-out images leave every other list too (e.g.
    ``pretrain``), so MAE pre-training never sees them.

    With ``folds`` K >= 2 (``fraction`` is then ignored), the seeded patient order is dealt into K disjoint folds
    (patient ``i`` of the order into fold ``i % K``) and fold ``fold`` is held out: over the K folds every training
    patient is held out exactly once (K-fold cross-validation)."""
    items = list(datalist["training"])
    order = _group_order(items, seed)
    if int(folds):
        folds, fold = int(folds), int(fold)
        if folds < 2 or not 0 <= fold < folds:
            raise ValueError(f"tune_folds {folds!r} must be at least 2 and the fold {fold!r} in [0, {folds - 1}].")
        if len(order) < folds:
            raise ValueError(f"tune_folds {folds} needs at least {folds} training patients or cases, the datalist "
                             f"has {len(order)}.")  # fmt: skip
        held = set(order[fold::folds])
    else:
        if not 0.0 < float(fraction) < 1.0:
            raise ValueError(f"tune_fraction {fraction!r} must lie in (0, 1): the share of training patients held out.")
        if len(order) < 2:
            raise ValueError(
                f"tune_fraction needs at least 2 training patients or cases, the datalist has {len(order)}."
            )
        held = set(order[: min(len(order) - 1, _fraction_size(float(fraction), len(order)))])
    test = [i for i in items if group_key(i) in held]
    images = {json.dumps(i.get("image"), sort_keys=True) for i in test}
    # other lists (pre-training's) lose the held-out images too: they stand for unseen test data
    out = {k: [i for i in v if json.dumps(i.get("image"), sort_keys=True) not in images] for k, v in datalist.items()}
    out["training"] = [i for i in items if group_key(i) not in held]
    out["test"] = test
    return out


# bootstrap


def counts_from_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` cases is drawn in each resample: (B, n) ints from (B, n) indices."""
    indices = np.asarray(indices, dtype=np.int64)
    b = indices.shape[0]
    flat = (np.arange(b, dtype=np.int64)[:, None] * n + indices).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n)


def _group_members(groups: np.ndarray) -> list[np.ndarray]:
    """The case indices of each group (fold), in the order the groups first appear."""
    groups = np.asarray(groups)
    return [np.flatnonzero(groups == g) for g in dict.fromkeys(groups.tolist())]


def bootstrap_counts(n: int, n_resamples: int, seed: int, groups: np.ndarray | None = None) -> Iterable[np.ndarray]:
    """The resamples with replacement of ``n`` cases, seeded, as count arrays in chunks of (b, n); with ``groups``
    ((n,) labels, e.g. the fold of each case) each group's cases are resampled within it (a stratified bootstrap)."""
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // max(n, 1))
    members = None if groups is None else _group_members(groups)
    for start in range(0, n_resamples, step):
        b = min(step, n_resamples - start)
        if members is None:
            yield counts_from_indices(rng.integers(0, n, size=(b, n)), n)
        else:
            drawn = [m[rng.integers(0, len(m), size=(b, len(m)))] for m in members]
            yield counts_from_indices(np.concatenate(drawn, axis=1), n)


def mean_resampled(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per resample, per class: the mean over the drawn cases where the value is defined.

    Args:
        values: (n, K) per-case values; NaN where undefined (a class absent from a case).
        counts: (B, n) how often each case is drawn.

    Returns:
        (B, K); NaN where no drawn case defines the class.
    """
    defined = np.isfinite(values)
    weights = counts[:, :, None] * defined[None]  # (B, n, K)
    total = weights.sum(axis=1)
    summed = (weights * np.where(defined, values, 0.0)[None]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, summed / np.maximum(total, 1), np.nan)


def auc_resampled(scores: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per resample, per class: the ROC AUC of the drawn images (ties count one half).

    Args:
        scores: (n, K) probabilities.
        labels: (n, K) 0/1 labels.
        counts: (B, n) how often each image is drawn.

    Returns:
        (B, K); NaN where the drawn images hold only one of a class's two labels.
    """
    n, k = scores.shape
    out = np.full((counts.shape[0], k), np.nan)
    for j in range(k):
        order = np.argsort(scores[:, j], kind="stable")
        s, y = scores[order, j], labels[order, j] > 0.5
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups of equal scores
        c = counts[:, order].astype(np.float64)
        pos = np.add.reduceat(c * y, starts, axis=1)  # (B, G)
        neg = np.add.reduceat(c * ~y, starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg  # negatives scored lower than each group
        p, q = pos.sum(axis=1), neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = np.where((p > 0) & (q > 0), (pos * (below + 0.5 * neg)).sum(axis=1) / (p * q), np.nan)
    return out


def auc_by_group(
    scores: np.ndarray, labels: np.ndarray, counts: np.ndarray, groups: np.ndarray | None = None
) -> np.ndarray:
    """:func:`auc_resampled`; with ``groups`` ((n,) labels: the fold of each image), per class the mean over the
    groups of each group's own AUC, a group where the class is undefined left out. Cross-validated predictions come
    from a different model per fold: one ranking of them all mixes the models' calibrations (and each fold's model
    learnt the other folds' base rates), which biases a pooled AUC downwards on small folds."""
    if groups is None:
        return auc_resampled(scores, labels, counts)
    per = np.stack([auc_resampled(scores[m], labels[m], counts[:, m]) for m in _group_members(groups)])  # (G, B, K)
    ok = np.isfinite(per)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok.any(0), np.where(ok, per, 0.0).sum(0) / np.maximum(ok.sum(0), 1), np.nan)


def _percentile_ci(samples: np.ndarray) -> tuple[list[float | None], int]:
    ok = samples[np.isfinite(samples)]
    if not ok.size:
        return [None, None], 0
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(ok, [tail, 100 - tail])
    return [float(lo), float(hi)], int(ok.size)


def verdict(ci: Sequence[float | None], higher_is_better: bool = True) -> str:
    """``"MAE ahead"`` when the CI of MAE - scratch lies above 0 (below for a lower-is-better metric),
    ``"scratch ahead"`` when on the other side, else ``"difference within noise (CI contains 0)"``."""
    lo, hi = ci
    if lo is None or hi is None:
        return VERDICTS[2]
    sign = 1 if higher_is_better else -1
    if (lo > 0 and sign > 0) or (hi < 0 and sign < 0):
        return VERDICTS[0]
    if (hi < 0 and sign > 0) or (lo > 0 and sign < 0):
        return VERDICTS[1]
    return VERDICTS[2]


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the finite values; NaN for a row without any."""
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok.any(axis=-1), np.where(ok, x, 0.0).sum(axis=-1) / np.maximum(ok.sum(axis=-1), 1), np.nan)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    class_names: Sequence[str],
    statistic: str,
    labels: np.ndarray | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    higher_is_better: bool = True,
    counts: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Paired bootstrap of ``a - b`` over test cases: the same resample for both arms.

    Args:
        a, b: (n, K) per-case values (``statistic="mean"``, NaN where undefined) or per-image probabilities
            (``statistic="auc"``, recomputed on every resample) of the two arms, rows in the same case order.
        class_names: the K class names.
        statistic: ``"mean"`` or ``"auc"``.
        labels: (n, K) 0/1 labels, for ``"auc"``.
        n_resamples: number of resamples (ignored when ``counts`` is given).
        seed: seed of the resamples.
        higher_is_better: direction of the metric, for the verdict.
        counts: (B, n) a fixed resample set instead of drawing one.
        groups: (n,) the fold of each case (cross-validation): the cases are resampled within their fold, and an
            AUC is the mean of the folds' AUCs (:func:`auc_by_group`); ``None``: one sample of cases.

    Returns:
        ``{"mean": {...}, "per_class": {name: {...}}, "arms": {"a": {...}, "b": {...}}}``; each entry holds
        ``difference`` (on all cases), ``ci95``, ``n_resamples`` (the resamples where it is defined) and ``verdict``;
        ``arms`` holds each arm's value and CI of the mean. A class undefined on a resample is left out there; the
        mean is over the classes defined in that resample (the same for both arms: pairs missing in either arm are
        left out of both).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != len(class_names):
        raise ValueError(f"arms of shapes {a.shape} and {b.shape} for {len(class_names)} classes.")
    if statistic == "mean":
        both = np.isfinite(a) & np.isfinite(b)
        a, b = np.where(both, a, np.nan), np.where(both, b, np.nan)

        def stat(x: np.ndarray, c: np.ndarray) -> np.ndarray:
            return mean_resampled(x, c)
    elif statistic == "auc":
        if labels is None or np.shape(labels) != a.shape:
            raise ValueError("statistic 'auc' needs labels of the shape of the probabilities.")

        def stat(x: np.ndarray, c: np.ndarray) -> np.ndarray:
            return auc_by_group(x, labels, c, groups)
    else:
        raise ValueError(f"statistic {statistic!r} is not 'mean' or 'auc'.")
    n = a.shape[0]
    resamples = [np.asarray(counts)] if counts is not None else bootstrap_counts(n, n_resamples, seed, groups)
    per_a, per_b = [], []
    # the point estimate first (every case once), then the resamples chunk by chunk
    for c in itertools.chain([counts_from_indices(np.arange(n)[None], n)], resamples):
        per_a.append(stat(a, c))
        per_b.append(stat(b, c))
    sa, sb = np.concatenate(per_a), np.concatenate(per_b)  # (1 + B, K)
    diff = sa - sb
    # the mean over classes: the classes defined for both arms in that resample
    both = np.isfinite(sa) & np.isfinite(sb)
    mean_a, mean_b = _nanmean_rows(np.where(both, sa, np.nan)), _nanmean_rows(np.where(both, sb, np.nan))

    def entry(point: float, samples: np.ndarray) -> dict[str, Any]:
        ci, used = _percentile_ci(samples)
        return {
            "difference": None if not np.isfinite(point) else float(point),
            "ci95": ci,
            "n_resamples": used,
            "verdict": verdict(ci, higher_is_better),
        }

    def arm(values: np.ndarray) -> dict[str, Any]:
        ci, _ = _percentile_ci(values[1:])
        return {"value": None if not np.isfinite(values[0]) else float(values[0]), "ci95": ci}

    return {
        "mean": entry(mean_a[0] - mean_b[0], mean_a[1:] - mean_b[1:]),
        "per_class": {name: entry(diff[0, j], diff[1:, j]) for j, name in enumerate(class_names)},
        "arms": {"a": arm(mean_a), "b": arm(mean_b)},
    }


# evaluation files


@dataclass
class Evaluation:
    """What one evaluation wrote: per-case values per metric (segmentation) or per-image probabilities (classification).

    ``values[metric]`` is (n, K) with NaN where undefined; for classification ``values["auc"]`` holds the
    probabilities and ``labels`` the 0/1 labels.
    """

    path: Path
    cases: list[str]
    class_names: list[str]
    values: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None  # (n,) the fold of each case, for pooled cross-validation folds

    @property
    def task(self) -> str:
        return "classification" if self.labels is not None else "segmentation"


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise FileNotFoundError(f"evaluation file '{path}' cannot be read: {err}.") from err
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _float(value: str | None) -> float:
    try:
        v = float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan
    return v if math.isfinite(v) else math.nan


def _summary_classes(path: Path, metric: str) -> list[str] | None:
    """The class columns (``<metric>_<class>`` suffixes) named by the summary JSON beside ``per_case.csv``, if any."""
    try:
        per_class = json.loads(path.read_text(encoding="utf-8"))[metric]["per_class"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(c).replace(" ", "_") for c in per_class] if isinstance(per_class, dict) and per_class else None


def read_per_case(path: str | os.PathLike, metrics: Sequence[str] = ("dice", "hd95")) -> Evaluation:
    """Per-case values of ``per_case.csv`` (``MetricsReport``): columns ``case`` and ``<metric>_<class>``.

    The classes are those of ``summary.json`` beside it (``<metric>.per_class``) when it names them, else every
    ``<metric>_`` column. A metric without columns is left out (HD95 may be absent); every metric takes the classes of
    the first. Empty, ``nan`` or infinite values are undefined (NaN). Other columns are ignored.

    Raises:
        ValueError: naming the file when it has no ``case`` or no Dice column.
    """
    path = Path(path)
    header, rows = _read_csv(path)
    if "case" not in header:
        raise ValueError(f"'{path}' has no 'case' column (columns: {header}).")
    names = _summary_classes(path.with_name("summary.json"), metrics[0])
    found: dict[str, list[str]] = {}
    for metric in metrics:
        columns = [c[len(metric) + 1 :] for c in header if c.startswith(metric + "_")]
        found[metric] = columns if names is None else [c for c in names if c in columns]
    classes = found[metrics[0]]
    if not classes:
        raise ValueError(f"'{path}' has no '{metrics[0]}_<class>' column (columns: {header}).")
    values = {}
    for metric in metrics:
        if found[metric]:
            values[metric] = np.array(
                [[_float(r.get(f"{metric}_{c}")) for c in classes] for r in rows], dtype=np.float64
            ).reshape(len(rows), len(classes))
    return Evaluation(path, [r["case"] for r in rows], classes, values)


def read_predictions(path: str | os.PathLike) -> Evaluation:
    """Per-image probabilities and labels of ``predictions.csv`` (``ClassificationReport``): ``image``, one column per
    class and ``label_<class>``.

    Raises:
        ValueError: naming the file when the image or label columns are missing or a value is not a number.
    """
    path = Path(path)
    header, rows = _read_csv(path)
    classes = [c[len("label_") :] for c in header if c.startswith("label_")]
    if "image" not in header or not classes or any(c not in header for c in classes):
        raise ValueError(f"'{path}' needs the columns image, <class> and label_<class> (columns: {header}).")
    try:
        probs = np.array([[float(r[c]) for c in classes] for r in rows], dtype=np.float64).reshape(len(rows), -1)
        labels = np.array([[float(r[f"label_{c}"]) for c in classes] for r in rows]).reshape(len(rows), -1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"'{path}' holds a value that is not a number: {err}.") from err
    return Evaluation(path, [r["image"] for r in rows], classes, {"auc": probs}, labels)


def read_evaluation(folder: Path) -> Evaluation:
    """The evaluation written to ``folder``: ``predictions.csv`` (classification) or ``per_case.csv``."""
    if (folder / "predictions.csv").is_file():
        return read_predictions(folder / "predictions.csv")
    if (folder / "per_case.csv").is_file():
        return read_per_case(folder / "per_case.csv")
    raise FileNotFoundError(f"no predictions.csv or per_case.csv in '{folder}' (the evaluation's output folder).")


def evaluation_file(folder: Path) -> Path | None:
    for name in ("predictions.csv", "per_case.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def run_metrics(ev: Evaluation) -> dict[str, float | None]:
    """The metric values of one evaluation: per metric the mean over classes and each class (runs.csv's columns)."""
    ones = np.ones((1, len(ev.cases)), dtype=np.int64)
    out: dict[str, float | None] = {}
    for metric, values in ev.values.items():
        per_class = (
            auc_by_group(values, ev.labels, ones, ev.groups)[0] if metric == "auc" else mean_resampled(values, ones)[0]
        )
        mean = _nanmean_rows(per_class[None])[0]
        out[metric] = None if not np.isfinite(mean) else float(mean)
        for name, v in zip(ev.class_names, per_class, strict=True):
            out[f"{metric}_{name.replace(' ', '_')}"] = None if not np.isfinite(v) else float(v)
    return out


# running the bundle


def subprocess_runner(args: Sequence[str], log_file: Path) -> None:
    """``python -m monai.bundle run ARGS`` with its output to ``log_file``; ``RuntimeError`` naming the log on
    failure."""
    command = [sys.executable, "-m", "monai.bundle", "run", *args]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w", encoding="utf-8") as log:
        log.write(shlex.join(command) + "\n\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join(lines[-15:])
        raise RuntimeError(f"command failed (exit {code}); its output is in '{log_file}':\n{tail}")


def parse_overrides(extra: str | Sequence[str]) -> list[str]:
    """``--key value`` pairs of a string (shell words) or a list; ``ValueError`` for a stray word."""
    words = shlex.split(extra) if isinstance(extra, str) else [str(w) for w in extra]
    i = 0
    while i < len(words):
        if not words[i].startswith("--") or i + 1 >= len(words) or "=" in words[i]:
            raise ValueError(f"overrides must be '--key value' pairs, got {words[i:]!r} in {extra!r}.")
        i += 2
    return words


def _override_dict(words: Sequence[str]) -> dict[str, Any]:
    """The overrides as ``monai.bundle run`` reads them (fire's parsing of each value)."""
    from fire.parser import DefaultParseValue

    return {words[i][2:]: DefaultParseValue(words[i + 1]) for i in range(0, len(words), 2)}


def _config_list(files: Sequence[Path]) -> str:
    return "[" + ",".join(repr(str(f)) for f in files) + "]"


@dataclass(frozen=True)
class Run:
    """One fine-tuning or linear-probe run and its evaluation."""

    arm: str
    fraction: float
    seed: int

    @property
    def name(self) -> str:
        return f"fraction{self.fraction:g}_seed{self.seed}_{self.arm}"

    @property
    def key(self) -> tuple[str, str, str]:
        return self.arm, f"{self.fraction:g}", str(self.seed)


class Study:
    """The files of a study and the commands of its runs (see :func:`run_study`)."""

    def __init__(
        self,
        bundle_root: Path,
        dataset_dir: str,
        output_dir: Path,
        config_overrides: Sequence[str],
        extra: Sequence[str],
        pretrain_extra: Sequence[str] = (),
        train_extra: Sequence[str] = (),
    ) -> None:
        self.bundle_root = bundle_root
        self.configs = bundle_root / "configs"
        for name in ("pretrain", "train", "evaluate"):
            if not (self.configs / f"{name}.yaml").is_file():
                raise FileNotFoundError(
                    f"'{self.configs / f'{name}.yaml'}' does not exist: is '{bundle_root}' a "
                    "bundle folder of this project?"
                )
        self.has_probe = (self.configs / "linear_probe.yaml").is_file()
        self.overrides = [self._override_file(o) for o in config_overrides]
        self.dataset_dir = dataset_dir
        self.output_dir = output_dir
        self.extra = list(extra)
        self.pretrain_extra = list(pretrain_extra)
        self.train_extra = list(train_extra)

    def _override_file(self, name: str) -> Path:
        path = Path(name) if ("/" in name or name.endswith((".yaml", ".json"))) else self.configs / f"{name}.yaml"
        path = path.expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"config override '{name}': '{path}' does not exist.")
        return path

    def arms(self, wanted: Sequence[str] | None = None) -> list[str]:
        """The arms of the study: ``wanted`` (default: every arm the bundle offers) in :data:`ARMS` order."""
        offered = ARMS if self.has_probe else ARMS[:2]
        wanted = list(offered) if wanted is None else list(wanted)
        bad = [a for a in wanted if a not in offered]
        if bad or not wanted:
            raise ValueError(f"arms {wanted!r}: choose among {list(offered)} (linear probes need configs/"
                             "linear_probe.yaml).")  # fmt: skip
        return [a for a in offered if a in wanted]

    def base_datalist(self) -> dict[str, list[dict[str, Any]]]:
        """The bundle's own datalist (train.yaml with the overrides), as every workflow of it would read it."""
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config([str(self.configs / "train.yaml"), *map(str, self.overrides)])
        parser.update({"bundle_root": str(self.bundle_root), "dataset_dir": self.dataset_dir})
        parser.update(_override_dict(self.extra + self.train_extra))
        datalist = parser.get_parsed_content("datalist")
        for key in ("training", "validation", "test"):
            if not datalist.get(key):
                raise ValueError(
                    f"the datalist of '{self.dataset_dir}' has no '{key}' items: the study needs training, "
                    "validation and test cases."
                )
        return {k: [dict(i) for i in v] for k, v in datalist.items()}

    def common(self, datalist_file: Path, ckpt_dir: Path, output_dir: Path) -> list[str]:
        return ["--bundle_root", str(self.bundle_root), "--dataset_dir", self.dataset_dir,
                "--datalist_file", str(datalist_file), "--ckpt_dir", str(ckpt_dir),
                "--output_dir", str(output_dir)]  # fmt: skip

    def pretrain_args(self, datalist_file: Path, folder: Path) -> list[str]:
        """``pretrain.yaml`` with the overrides, on the whole training list (``datalist_file``'s ``pretrain``)."""
        files = [self.configs / "pretrain.yaml", *self.overrides]
        return ["--config_file", _config_list(files), *self.common(datalist_file, folder / "models", folder / "logs"),
                *self.extra, *self.pretrain_extra]  # fmt: skip

    def train_args(self, run: Run, datalist_file: Path, folder: Path, mae_ckpt: Path) -> list[str]:
        """``train.yaml`` (and ``linear_probe.yaml`` for a probe) from the MAE encoder or from none."""
        probe = run.arm.startswith("probe")
        files = [self.configs / "train.yaml", *([self.configs / "linear_probe.yaml"] if probe else []), *self.overrides]
        pretrained = str(mae_ckpt) if run.arm in ("mae", "probe_mae") else "none"
        return ["--config_file", _config_list(files), *self.common(datalist_file, folder / "models", folder / "train"),
                "--seed", str(run.seed), "--pretrained_ckpt", pretrained, *self.extra, *self.train_extra]  # fmt: skip

    def evaluate_args(self, run: Run, datalist_file: Path, folder: Path) -> list[str]:
        """``evaluate.yaml`` over ``train.yaml``: the run's model on the test split."""
        files = [self.configs / "train.yaml", self.configs / "evaluate.yaml", *self.overrides]
        model = folder / "models" / MODEL_FILES[run.arm]
        return ["--config_file", _config_list(files),
                *self.common(datalist_file, folder / "models", folder / "evaluate"),
                "--seed", str(run.seed), "--model_path", str(model), *self.extra]  # fmt: skip


def _write_datalist(path: Path, datalist: Mapping[str, Any]) -> None:
    """Writes the datalist JSON; ``ValueError`` when an earlier call of the study wrote a different one there."""
    text = json.dumps(datalist, indent=4) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") != text:
        raise ValueError(
            f"'{path}' holds another subset than this call draws (another data set, split or "
            "subset_seed?): use a new output_dir, or delete the folder to start over."
        )
    atomic_write_text(path, text)


RUN_COLUMNS = [
    "arm",
    "fraction",
    "seed",
    "n_train",
    "n_train_groups",
    "wall_s",
    "status",
    "evaluation",
    "run_dir",
    "datalist",
]


def _read_runs(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    if not path.is_file():
        return {}
    _, rows = _read_csv(path)
    out = {}
    for row in rows:
        try:
            key = (row["arm"], f"{float(row['fraction']):g}", str(int(row["seed"])))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"'{path}' has a malformed row {row!r}: delete the file to start over.") from err
        out[key] = row
    return out


def _write_runs(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    rows = list(rows)
    columns = RUN_COLUMNS + list(dict.fromkeys(k for r in rows for k in r if k not in RUN_COLUMNS))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    atomic_write_text(path, text.getvalue())


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _as_list(value: Any, what: str, cast: Callable[[Any], Any]) -> list:
    """A comma-separated string, a number or a sequence, as a list (fire gives any of these)."""
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    elif isinstance(value, Iterable):
        parts = list(value)
    else:
        parts = [value]
    try:
        return [cast(p) for p in parts]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} {value!r}: {err}.") from err


def run_study(
    bundle_root: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    fractions: Any = (1.0, 0.5, 0.25, 0.1),
    seeds: Any = (0, 1, 2),
    mae_ckpt: str | os.PathLike | None = None,
    config_overrides: Any = (),
    extra: str | Sequence[str] = "",
    pretrain_extra: str | Sequence[str] = "",
    train_extra: str | Sequence[str] = "",
    arms: Any = None,
    n_resamples: int = 2000,
    bootstrap_seed: int = 0,
    subset_seed: int = 0,
    tune_fraction: float = 0.0,
    tune_folds: int = 0,
    tune_fold: int | None = None,
    runner: Runner | None = None,
) -> dict[str, Any]:
    """Run (or complete) the study and write its outputs; returns the summary (``summary.json``'s content).

    Args:
        bundle_root: the bundle folder (``bundles/<name>``).
        dataset_dir: the data set, as for the bundle's workflows.
        output_dir: folder of the study; a second call with the same folder runs only the runs not finished.
        fractions: fractions of the labelled training patients, e.g. ``1,0.5,0.25,0.1``.
        seeds: seeds of the runs; each (fraction, seed) trains every arm with that seed.
        mae_ckpt: an MAE checkpoint to use; ``None`` pre-trains once with ``pretrain.yaml`` (in
            ``output_dir/pretrain``).
        config_overrides: config files merged last into every workflow: names in the bundle's ``configs/``
            (``quick``) or paths.
        extra: ``--key value`` overrides added to every command (e.g. ``--max_epochs 5``).
        pretrain_extra: overrides added to the pre-training command only.
        train_extra: overrides added to the fine-tuning and linear-probe commands only.
        arms: the arms to run among :data:`ARMS` (default: all the bundle offers; the probes need
            ``linear_probe.yaml``).
        n_resamples: bootstrap resamples.
        bootstrap_seed: seed of the resamples.
        subset_seed: seed of the order in which patients enter the subsets.
        tune_fraction: 0 (default) evaluates on the test split. A fraction in (0, 1) chooses settings without it:
            that share of the training patients (seeded by ``subset_seed``) is held out and evaluated on instead,
            and no run reads the test split (:func:`tuning_split`).
        tune_folds: K >= 2 chooses settings by K-fold cross-validation on the training patients instead (no run reads
            the test split): fold k holds out every K-th patient of the seeded order (:func:`tuning_split`), with its
            own pre-training, in ``output_dir/fold<k>``; ``summary.json`` pools the held-out predictions of the K
            folds, so every training patient is evaluated once (see :func:`run_folds`).
        tune_fold: with ``tune_folds``, run fold ``k`` alone, in ``output_dir`` itself (``None``: every fold, pooled).
        runner: runs one ``monai.bundle run`` command (default: :func:`subprocess_runner`).

    Raises:
        RuntimeError: a command failed (the message names its log file); finished runs stay recorded.
        ValueError, FileNotFoundError: bad arguments, naming the value or file.
    """
    if int(tune_folds) and float(tune_fraction):
        raise ValueError("give tune_fraction or tune_folds, not both: each holds training patients out its own way.")
    if int(tune_folds) and tune_fold is None:
        return run_folds(bundle_root, dataset_dir, output_dir, int(tune_folds), fractions=fractions, seeds=seeds,
                         mae_ckpt=mae_ckpt, config_overrides=config_overrides, extra=extra,
                         pretrain_extra=pretrain_extra, train_extra=train_extra, arms=arms, n_resamples=n_resamples,
                         bootstrap_seed=bootstrap_seed, subset_seed=subset_seed, runner=runner)  # fmt: skip
    started = time.monotonic()
    runner = runner or subprocess_runner
    bundle = Path(bundle_root).expanduser().resolve()
    out = Path(output_dir).expanduser().resolve()
    fractions = check_fractions(_as_list(fractions, "fractions", float))
    seeds = list(dict.fromkeys(_as_list(seeds, "seeds", int)))
    if not seeds:
        raise ValueError("no seed given.")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples {n_resamples!r} must be at least 1.")
    overrides = [str(o) for o in _as_list(config_overrides or (), "config_overrides", str)]
    dataset = str(Path(dataset_dir).expanduser().resolve())
    study = Study(bundle, dataset, out, overrides, parse_overrides(extra), parse_overrides(pretrain_extra),
                  parse_overrides(train_extra))  # fmt: skip
    chosen = study.arms(None if arms is None else _as_list(arms, "arms", str))
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "bundle_root": str(bundle),
        "dataset_dir": study.dataset_dir,
        "config_overrides": [str(p) for p in study.overrides],
        "extra": study.extra,
        "pretrain_extra": study.pretrain_extra,
        "train_extra": study.train_extra,
        "mae_ckpt": None if mae_ckpt is None else str(Path(mae_ckpt).expanduser().resolve()),
        "subset_seed": int(subset_seed),
        "tune_fraction": float(tune_fraction),
        **({"tune_folds": int(tune_folds), "tune_fold": int(tune_fold)} if int(tune_folds) else {}),  # type: ignore[arg-type]
    }
    settings_file = out / "study.json"
    if settings_file.is_file():
        before = json.loads(settings_file.read_text(encoding="utf-8"))
        changed = sorted(k for k in settings if before.get(k, 0.0 if k == "tune_fraction" else None) != settings[k])
        if changed:
            raise ValueError(
                f"'{settings_file}' records a study with other settings ({', '.join(changed)}): its runs "
                "would not compare. Use a new output_dir, or delete the folder to start over."
            )
    write_json_atomic(settings, settings_file)

    # the subsets: nested by patient; validation, test and pre-training lists unchanged
    base = study.base_datalist()
    if float(tune_fraction) > 0 or int(tune_folds):
        base = tuning_split(base, float(tune_fraction), int(subset_seed), int(tune_folds), int(tune_fold or 0))
        logger.info(
            "tuning: %d training items held out as the test split (%s); the real test split is not read",
            len(base["test"]),
            f"fold {tune_fold} of {tune_folds}" if int(tune_folds) else f"tune_fraction {float(tune_fraction):g}",
        )
    subsets = nested_subsets(base["training"], fractions, int(subset_seed))
    datalists = {}
    for f, items in subsets.items():
        path = out / "datalists" / f"fraction{f:g}.json"
        _write_datalist(path, {**base, "training": items})
        datalists[f] = path
    full_list = out / "datalists" / "full.json"
    _write_datalist(full_list, base)
    logger.info(
        "study of %s: %d training patient groups (%d items), %d validation, %d test items; fractions %s, "
        "seeds %s, arms %s",
        bundle.name,
        len({group_key(i) for i in base["training"]}),
        len(base["training"]),
        len(base["validation"]),
        len(base["test"]),
        fractions,
        seeds,
        chosen,
    )

    # pre-training, once (when an arm starts from the MAE encoder)
    pre = out / "pretrain"
    done = pre / "finished.json"
    mae = pre / "models" / "mae.pt"
    if not any(a in ("mae", "probe_mae") for a in chosen):
        logger.info("no arm starts from the MAE encoder: no pre-training")
    elif mae_ckpt is None:
        if not (done.is_file() and mae.is_file()):
            if pre.exists():
                logger.info("pre-training was not finished: starting it again in %s", pre)
                shutil.rmtree(pre)
            logger.info("pre-training the MAE once (log: %s)", pre / "log.txt")
            t0 = time.monotonic()
            runner(study.pretrain_args(full_list, pre), pre / "log.txt")
            if not mae.is_file():
                raise RuntimeError(f"pre-training finished without writing '{mae}' (log: '{pre / 'log.txt'}').")
            write_json_atomic({"mae_ckpt": str(mae), "wall_s": time.monotonic() - t0}, done)
        else:
            logger.info("pre-training already finished: %s", mae)
    else:
        mae = Path(settings["mae_ckpt"])
        if not mae.is_file():
            raise FileNotFoundError(f"MAE checkpoint '{mae}' does not exist.")

    # the runs
    runs_csv = out / "runs.csv"
    records = _read_runs(runs_csv)
    plan = [Run(arm, f, s) for f in fractions for s in seeds for arm in chosen]
    new = 0
    for number, run in enumerate(plan, 1):
        folder = out / "runs" / run.name
        row = records.get(run.key)
        items = subsets[run.fraction]
        what = (
            f"run {number}/{len(plan)}: {run.arm} fraction {run.fraction:g} seed {run.seed} "
            f"({len(items)} training items)"
        )
        if row is not None and row.get("status") == "finished" and evaluation_file(folder / "evaluate") is not None:
            logger.info("%s: finished before, kept", what)
            continue
        if folder.exists():
            shutil.rmtree(folder)  # an unfinished run starts again from nothing
        logger.info("%s ...", what)
        t0 = time.monotonic()
        runner(study.train_args(run, datalists[run.fraction], folder, mae), folder / "train.log")
        model = folder / "models" / MODEL_FILES[run.arm]
        if not model.is_file():
            raise RuntimeError(f"{what}: training finished without writing '{model}' (log: '{folder / 'train.log'}').")
        runner(study.evaluate_args(run, datalists[run.fraction], folder), folder / "evaluate.log")
        found = evaluation_file(folder / "evaluate")
        if found is None:
            raise RuntimeError(
                f"{what}: evaluation wrote no per_case.csv or predictions.csv in "
                f"'{folder / 'evaluate'}' (log: '{folder / 'evaluate.log'}')."
            )
        wall = time.monotonic() - t0
        metrics = run_metrics(read_evaluation(folder / "evaluate"))
        records[run.key] = {
            "arm": run.arm,
            "fraction": f"{run.fraction:g}",
            "seed": run.seed,
            "n_train": len(items),
            "n_train_groups": len({group_key(i) for i in items}),
            "wall_s": round(wall, 1),
            "status": "finished",
            "evaluation": str(found),
            "run_dir": str(folder),
            "datalist": str(datalists[run.fraction]),
            **metrics,
        }
        _write_runs(runs_csv, records.values())
        new += 1
        main = next(iter(metrics))
        logger.info("%s done in %.0f s: %s %s", what, wall, main, _cell(metrics[main]))

    _write_runs(runs_csv, records.values())
    summary = summarise(out, plan, subsets, int(n_resamples), int(bootstrap_seed), bundle=bundle.name)
    summary["runs_this_call"] = new
    summary["tune_fraction"] = float(tune_fraction)  # > 0: evaluated on held-out training patients, not the test split
    if int(tune_folds):
        summary["tune_folds"], summary["tune_fold"] = int(tune_folds), int(tune_fold or 0)
    if done.is_file():
        summary["pretrain_wall_s"] = round(json.loads(done.read_text(encoding="utf-8"))["wall_s"], 1)
    summary["wall_s_this_call"] = round(time.monotonic() - started, 1)
    write_json_atomic(summary, out / "summary.json")
    write_png(summary, out / "label_efficiency.png")
    atomic_write_text(out / "study.md", study_markdown(summary))
    atomic_write_text(out / "study.html", study_html(summary))
    logger.info(
        "study finished: %d runs (%d new in this call) in %.1f min; %s",
        len(plan),
        new,
        summary["wall_s_this_call"] / 60,
        out / "summary.json",
    )
    return summary


def pool_evaluations(evaluations: Sequence[Evaluation]) -> Evaluation:
    """One evaluation of the cases of several (the folds' disjoint held-out cases, in the given order); ``groups``
    holds each case's position in ``evaluations`` (its fold), so an AUC is computed fold by fold and averaged.

    Raises:
        ValueError: naming the files when their classes differ or a case appears twice.
    """
    first = evaluations[0]
    for ev in evaluations[1:]:
        if ev.class_names != first.class_names or set(ev.values) != set(first.values):
            raise ValueError(f"'{ev.path}' has other classes or metrics than '{first.path}': they cannot be pooled.")
    cases = [c for ev in evaluations for c in ev.cases]
    if len(set(cases)) != len(cases):
        twice = sorted({c for c in cases if cases.count(c) > 1})[:3]
        raise ValueError(f"the folds' evaluations ({', '.join(str(e.path) for e in evaluations)}) share the cases "
                         f"{twice}: folds must hold out disjoint patients.")  # fmt: skip
    values = {m: np.concatenate([ev.values[m] for ev in evaluations]) for m in first.values}
    labels = None if first.labels is None else np.concatenate([ev.labels for ev in evaluations])  # type: ignore[misc]
    groups = np.concatenate([np.full(len(ev.cases), k) for k, ev in enumerate(evaluations)])
    return Evaluation(first.path.parent, cases, first.class_names, values, labels, groups)


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
    images ranked by its own models, :func:`auc_by_group`). ``summary.json`` also lists each fold's own summary.

    Args:
        folds: K >= 2.
        mae_ckpt: ``None`` pre-trains in every fold; else a path holding ``{fold}`` (e.g.
            ``runs/cv/fold{fold}/pretrain/models/mae.pt``), each fold's MAE (one checkpoint for every fold would
            have seen the held-out images).
        options: the other arguments of :func:`run_study` (a ``tune_fraction`` is refused there: the folds hold
            patients out instead).

    Raises:
        ValueError: ``folds`` < 2, or ``mae_ckpt`` without ``{fold}``.
    """
    started = time.monotonic()
    folds = int(folds)
    if folds < 2:
        raise ValueError(f"tune_folds {folds!r} must be at least 2.")
    if mae_ckpt is not None and "{fold}" not in str(mae_ckpt):
        raise ValueError(
            f"mae_ckpt '{mae_ckpt}' is one checkpoint for every fold, so it was pre-trained on patients that some fold "
            "holds out: give a path with {fold} (each fold's own mae.pt), or none to pre-train in every fold."
        )
    out = Path(output_dir).expanduser().resolve()
    summaries = []
    for k in range(folds):
        logger.info("fold %d of %d (%s)", k, folds, out / f"fold{k}")
        ckpt = None if mae_ckpt is None else str(mae_ckpt).replace("{fold}", str(k))
        summaries.append(run_study(bundle_root, dataset_dir, out / f"fold{k}", mae_ckpt=ckpt, tune_folds=folds,
                                   tune_fold=k, runner=runner, **options))  # fmt: skip
    evaluations: dict[Run, list[Evaluation]] = {}
    walls: dict[Run, float] = {}
    sizes: dict[float, list[tuple[int, int]]] = {}
    rows = []
    # this call's runs (runs.csv may also hold those of an earlier call with more seeds or arms)
    plan = [Run(a, float(f), int(seed)) for f, e in summaries[0]["fractions"].items() for a, v in e["arms"].items()
            for seed in v["seeds"]]  # fmt: skip
    for k in range(folds):
        folder = out / f"fold{k}"
        records = _read_runs(folder / "runs.csv")
        for f, entry in summaries[k]["fractions"].items():
            sizes.setdefault(float(f), []).append((entry["n_train"], entry["n_train_groups"]))
        for run in plan:
            evaluations.setdefault(run, []).append(read_evaluation(folder / "runs" / run.name / "evaluate"))
            walls[run] = walls.get(run, 0.0) + float(records[run.key].get("wall_s") or 0)
            rows.append({"fold": k, **records[run.key]})
    pooled = {r: pool_evaluations(evaluations[r]) for r in plan}
    mean_sizes = {f: (round(float(np.mean([s[0] for s in v]))), round(float(np.mean([s[1] for s in v]))))
                  for f, v in sizes.items()}  # fmt: skip
    summary = summarise_evaluations(pooled, walls, mean_sizes, int(options.get("n_resamples", 2000)),
                                    int(options.get("bootstrap_seed", 0)), bundle=summaries[0]["bundle"])  # fmt: skip
    summary["notes"].append(
        f"{folds}-fold cross-validation on the training patients: each arm's values pool the held-out predictions of "
        f"the {folds} folds' models (an AUC is the mean of the folds' AUCs; the bootstrap resamples within each "
        "fold); training items and patients are the mean over the folds."
    )
    summary["tune_fraction"] = 0.0
    summary["tune_folds"] = folds
    summary["folds"] = [
        {"fold": k, "dir": str(out / f"fold{k}"), "n_test": s["n_test"], "pretrain_wall_s": s.get("pretrain_wall_s"),
         "fractions": {f: {n: c[s["metric"]]["mean"] for n, c in e["comparisons"].items()}
                       for f, e in s["fractions"].items()}}
        for k, s in enumerate(summaries)
    ]  # fmt: skip
    summary["runs_this_call"] = sum(s["runs_this_call"] for s in summaries)
    pre = [s["pretrain_wall_s"] for s in summaries if s.get("pretrain_wall_s") is not None]
    if pre:
        summary["pretrain_wall_s"] = round(sum(pre), 1)
    summary["wall_s_this_call"] = round(time.monotonic() - started, 1)
    _write_runs(out / "runs.csv", rows)
    write_json_atomic(summary, out / "summary.json")
    write_png(summary, out / "label_efficiency.png")
    atomic_write_text(out / "study.md", study_markdown(summary))
    atomic_write_text(out / "study.html", study_html(summary))
    logger.info("cross-validated study finished: %d folds in %.1f min; %s", folds, summary["wall_s_this_call"] / 60,
                out / "summary.json")  # fmt: skip
    return summary


# summary


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
    records = _read_runs(output_dir / "runs.csv")
    walls = {r: float(records[r.key].get("wall_s") or 0) for r in plan}
    sizes = {f: (len(items), len({group_key(i) for i in items})) for f, items in subsets.items()}
    return summarise_evaluations(evaluations, walls, sizes, n_resamples, seed, bundle)


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
    task = first.task
    primary = "auc" if task == "classification" else "dice"
    for ev in evaluations.values():
        if ev.cases != first.cases or ev.class_names != first.class_names:
            raise ValueError(
                f"'{ev.path}' evaluates other test cases or classes than '{first.path}': the test split "
                "must be the same for every run."
            )
        if ev.labels is not None and not np.array_equal(ev.labels, first.labels):
            raise ValueError(f"'{ev.path}' holds other test labels than '{first.path}'.")
    metrics = [m for m in ("dice", "hd95", "auc") if all(m in ev.values for ev in evaluations.values())]
    summary: dict[str, Any] = {
        "bundle": bundle,
        "task": task,
        "metric": primary,
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
    summary["total_run_wall_s"] = round(sum(walls[r] for r in plan), 1)
    for f in sorted({r.fraction for r in plan}, reverse=True):
        runs = [r for r in plan if r.fraction == f]
        arms = list(dict.fromkeys(r.arm for r in runs))
        entry: dict[str, Any] = {
            "n_train": sizes[f][0],
            "n_train_groups": sizes[f][1],
            "arms": {},
            "comparisons": {},
        }
        per_arm = {a: [evaluations[r] for r in runs if r.arm == a] for a in arms}
        for a in arms:
            entry["arms"][a] = {"seeds": [r.seed for r in runs if r.arm == a]}
            for m in metrics:
                entry["arms"][a][m] = _mean_sd([run_metrics(ev)[m] for ev in per_arm[a]])
        for a, b in COMPARISONS:
            if a not in per_arm or b not in per_arm:
                continue
            name = f"{a} - {b}"
            comparison: dict[str, Any] = {}
            for m in metrics:
                result = paired_bootstrap(
                    _seed_average(per_arm[a], m),
                    _seed_average(per_arm[b], m),
                    first.class_names,
                    "auc" if m == "auc" else "mean",
                    labels=first.labels,
                    n_resamples=n_resamples,
                    seed=seed,
                    higher_is_better=HIGHER_IS_BETTER[m],
                    groups=first.groups,
                )
                arms_ci = result.pop("arms")
                entry["arms"][a][m]["seed_averaged"] = arms_ci["a"]
                entry["arms"][b][m]["seed_averaged"] = arms_ci["b"]
                comparison[m] = result
            comparison["verdict"] = comparison[primary]["mean"]["verdict"]
            entry["comparisons"][name] = comparison
        summary["fractions"][f"{f:g}"] = entry
    return summary


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _split_name(summary: Mapping[str, Any]) -> str:
    """What the study evaluated on: the test split, held-out training patients, or one fold or all folds of them."""
    folds = summary.get("tune_folds")
    if folds and "tune_fold" in summary:
        return f"Held-out training patients, fold {summary['tune_fold']} of {folds} (tuning, test split not read)"
    if folds:
        return f"Held-out training patients, pooled over {folds} folds (cross-validation, test split not read)"
    return "Held-out training patients (tuning, test split not read)" if summary.get("tune_fraction") else "Test split"


def study_markdown(summary: Mapping[str, Any]) -> str:
    """The study as Markdown: per fraction, each arm's mean ± sd over seeds and each difference with its CI."""
    m = summary["metric"]
    split = _split_name(summary)
    lines = [
        "## Study: MAE against scratch",
        "",
        f"{split}: {summary['n_test']} {'images' if summary['task'] == 'classification' else 'cases'}; "
        f"{m} (mean over classes); differences with the paired bootstrap {int(summary['confidence'] * 100)} % CI over "
        f"test cases ({summary['n_resamples']} resamples, seed {summary['bootstrap_seed']}).",
        "",
        *[line for n in summary["notes"] for line in (f"Note: {n}", "")],
        "![label efficiency](label_efficiency.png)",
        "",
        f"| fraction | training items (patients) | arm | {m} mean ± sd over seeds | seeds |",
        "|---|---|---|---|---|",
    ]
    for f, entry in summary["fractions"].items():
        for arm, values in entry["arms"].items():
            v = values[m]
            sd = "" if v["sd"] is None else f" ± {_fmt(v['sd'])}"
            lines.append(
                f"| {f} | {entry['n_train']} ({entry['n_train_groups']}) | {summary['arm_labels'][arm]} | "
                f"{_fmt(v['mean'])}{sd} | {len(values['seeds'])} |"
            )
    lines += ["", f"| fraction | difference | {m} difference | 95 % CI | verdict |", "|---|---|---|---|---|"]
    for f, entry in summary["fractions"].items():
        for name, comp in entry["comparisons"].items():
            c = comp[m]["mean"]
            lo, hi = c["ci95"]
            lines.append(f"| {f} | {name} | {_fmt(c['difference'])} | [{_fmt(lo)}, {_fmt(hi)}] | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def study_html(summary: Mapping[str, Any]) -> str:
    """The study as an HTML fragment (a ``<section>``), the PNG referred to by its name beside it."""
    e = html.escape
    m = summary["metric"]
    rows = []
    for f, entry in summary["fractions"].items():
        for arm, values in entry["arms"].items():
            v = values[m]
            sd = "" if v["sd"] is None else f" ± {_fmt(v['sd'])}"
            rows.append(
                f"<tr><td>{e(f)}</td><td>{entry['n_train']} ({entry['n_train_groups']})</td>"
                f"<td>{e(summary['arm_labels'][arm])}</td><td>{_fmt(v['mean'])}{sd}</td></tr>"
            )
    diffs = []
    for f, entry in summary["fractions"].items():
        for name, comp in entry["comparisons"].items():
            c = comp[m]["mean"]
            lo, hi = c["ci95"]
            diffs.append(
                f"<tr><td>{e(f)}</td><td>{e(name)}</td><td>{_fmt(c['difference'])}</td>"
                f"<td>[{_fmt(lo)}, {_fmt(hi)}]</td><td>{e(c['verdict'])}</td></tr>"
            )
    return (
        "\n".join(
            [
                '<section id="study">',
                "<h2>Study: MAE against scratch</h2>",
                f'<p class="note">{e(_split_name(summary))}: {summary["n_test"]} cases; {e(m)} = mean over classes; '
                "paired bootstrap "
                f"{int(summary['confidence'] * 100)} % CI over test cases ({summary['n_resamples']} resamples).</p>",
                *[f'<p class="note">Note: {e(n)}</p>' for n in summary["notes"]],
        '<img src="label_efficiency.png" alt="metric against label fraction per arm, with CI bars">',
                "<table><tr><th>fraction</th><th>training items (patients)</th><th>arm</th>"
                f"<th>{e(m)} mean ± sd</th></tr>",
                *rows,
                "</table>",
                f"<table><tr><th>fraction</th><th>difference</th><th>{e(m)}</th><th>95 % CI</th><th>verdict</th></tr>",
                *diffs,
                "</table>",
                "</section>",
            ]
        )
        + "\n"
    )


# the figure

_COLOURS = {"mae": (214, 39, 40), "scratch": (31, 119, 180), "probe_mae": (255, 127, 14), "probe_random": (44, 160, 44)}


def write_png(summary: Mapping[str, Any], path: Path) -> Path:
    """``label_efficiency.png``: left, the metric of each arm (seed-averaged, with its bootstrap CI) against the label
    fraction; right, each paired difference with its CI and the zero line."""
    from PIL import Image, ImageDraw, ImageFont

    m = summary["metric"]
    fractions = sorted(summary["fractions"], key=float)
    width, height, margin = 1000, 480, 60
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    bottom = height - 110  # room for the axis labels and the legend below
    panels = [(margin, 40, width // 2 - 20, bottom), (width // 2 + margin, 40, width - 20, bottom)]

    def series_arms() -> dict[str, list[tuple[float | None, list]]]:
        out = {}
        for arm in summary["arm_labels"]:
            out[arm] = [
                (
                    (summary["fractions"][f]["arms"][arm][m].get("seed_averaged") or {}).get("value"),
                    (summary["fractions"][f]["arms"][arm][m].get("seed_averaged") or {}).get("ci95", [None, None]),
                )
                for f in fractions
            ]
        return out

    def series_diffs() -> dict[str, list[tuple[float | None, list]]]:
        out: dict[str, list] = {}
        for f in fractions:
            for name, comp in summary["fractions"][f]["comparisons"].items():
                c = comp[m]["mean"]
                out.setdefault(name, []).append((c["difference"], c["ci95"]))
        return out

    def panel(box: tuple[int, int, int, int], series: Mapping[str, list], title: str, zero: bool) -> None:
        x0, y0, x1, y1 = box
        values = [v for s in series.values() for p, ci in s for v in (p, *ci) if v is not None]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        if zero:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.08 * (hi - lo)
        lo, hi = lo - pad, hi + pad

        def px(i: int) -> float:
            return x0 + (i + 0.5) * (x1 - x0) / len(fractions)

        def py(v: float) -> float:
            return y1 - (v - lo) / (hi - lo) * (y1 - y0)

        draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
        draw.text((x0, y0 - 28), title, fill=(0, 0, 0), font=font)
        for k in range(5):
            v = lo + (hi - lo) * k / 4
            draw.line([x0 - 4, py(v), x0, py(v)], fill=(0, 0, 0))
            draw.text((x0 - 52, py(v) - 6), f"{v:.3f}", fill=(0, 0, 0), font=font)
        for i, f in enumerate(fractions):
            draw.text((px(i) - 12, y1 + 6), f"{float(f) * 100:g}%", fill=(0, 0, 0), font=font)
        draw.text(((x0 + x1) // 2 - 60, y1 + 24), "fraction of labelled training patients", fill=(0, 0, 0), font=font)
        if zero:
            draw.line([x0, py(0.0), x1, py(0.0)], fill=(150, 150, 150))
        for k, (name, points) in enumerate(series.items()):
            colour = _COLOURS.get(name.split(" - ")[0], (80, 80, 80))
            shift = (k - (len(series) - 1) / 2) * 6
            previous = None
            for i, (v, ci) in enumerate(points):
                x = px(i) + shift
                if ci[0] is not None and ci[1] is not None:
                    draw.line([x, py(ci[0]), x, py(ci[1])], fill=colour, width=2)
                    draw.line([x - 4, py(ci[0]), x + 4, py(ci[0])], fill=colour, width=2)
                    draw.line([x - 4, py(ci[1]), x + 4, py(ci[1])], fill=colour, width=2)
                if v is not None:
                    draw.ellipse([x - 4, py(v) - 4, x + 4, py(v) + 4], fill=colour)
                    if previous is not None:
                        draw.line([previous, (x, py(v))], fill=colour, width=2)
                    previous = (x, py(v))
            label = summary["arm_labels"].get(name, name)
            draw.line([x0, y1 + 50 + 14 * k, x0 + 20, y1 + 50 + 14 * k], fill=colour, width=3)
            draw.text((x0 + 26, y1 + 44 + 14 * k), label, fill=colour, font=font)

    panel(panels[0], series_arms(), f"{m} (mean over classes, seeds averaged; bootstrap 95% CI)", zero=False)
    panel(panels[1], series_diffs(), f"paired difference of {m} (95% CI)", zero=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
