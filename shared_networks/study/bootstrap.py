"""Paired bootstrap statistics over test cases: seeded resamples as count arrays, the per-class mean and ROC AUC of
every resample at once, percentile CIs and the verdict on a difference."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CONFIDENCE",
    "VERDICTS",
    "auc_by_group",
    "auc_resampled",
    "bootstrap_counts",
    "counts_from_indices",
    "group_members",
    "mean_resampled",
    "nanmean_rows",
    "paired_bootstrap",
    "verdict",
]

VERDICTS = ("MAE ahead", "scratch ahead", "difference within noise (CI contains 0)")
CONFIDENCE = 0.95
_CHUNK = 4_000_000  # resample counts held at once (resamples x cases)


def counts_from_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` cases is drawn in each resample: (B, n) ints from (B, n) indices."""
    indices = np.asarray(indices, dtype=np.int64)
    b = indices.shape[0]
    flat = (np.arange(b, dtype=np.int64)[:, None] * n + indices).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n)


def group_members(groups: np.ndarray) -> list[np.ndarray]:
    """The case indices of each group (fold), in the order the groups first appear."""
    groups = np.asarray(groups)
    return [np.flatnonzero(groups == g) for g in dict.fromkeys(groups.tolist())]


def bootstrap_counts(n: int, n_resamples: int, seed: int, groups: np.ndarray | None = None) -> Iterable[np.ndarray]:
    """The resamples with replacement of ``n`` cases, seeded, as count arrays in chunks of (b, n); with ``groups``
    ((n,) labels, e.g. the fold of each case) each group's cases are resampled within it (a stratified bootstrap)."""
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // max(n, 1))
    members = None if groups is None else group_members(groups)
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
    per = np.stack([auc_resampled(scores[m], labels[m], counts[:, m]) for m in group_members(groups)])  # (G, B, K)
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


def nanmean_rows(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the finite values; NaN for a row without any."""
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok.any(axis=-1), np.where(ok, x, 0.0).sum(axis=-1) / np.maximum(ok.sum(axis=-1), 1), np.nan)


Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _statistic(
    a: np.ndarray, b: np.ndarray, statistic: str, labels: np.ndarray | None, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, Statistic]:
    """The two arms as the statistic reads them (a mean: pairs missing in either arm left out of both) and the
    statistic of one arm on a resample set: (n, K), (B, n) -> (B, K)."""
    if statistic == "mean":
        both = np.isfinite(a) & np.isfinite(b)
        return np.where(both, a, np.nan), np.where(both, b, np.nan), mean_resampled
    if statistic == "auc":
        if labels is None or np.shape(labels) != a.shape:
            raise ValueError("statistic 'auc' needs labels of the shape of the probabilities.")

        def stat(x: np.ndarray, c: np.ndarray) -> np.ndarray:
            return auc_by_group(x, labels, c, groups)

        return a, b, stat
    raise ValueError(f"statistic {statistic!r} is not 'mean' or 'auc'.")


def _difference_entry(point: float, samples: np.ndarray, higher_is_better: bool) -> dict[str, Any]:
    """One difference: its value on all cases, the percentile CI of its resamples and the verdict."""
    ci, used = _percentile_ci(samples)
    return {
        "difference": None if not np.isfinite(point) else float(point),
        "ci95": ci,
        "n_resamples": used,
        "verdict": verdict(ci, higher_is_better),
    }


def _arm_entry(values: np.ndarray) -> dict[str, Any]:
    """One arm's value on all cases (``values[0]``) and the percentile CI of its resamples (``values[1:]``)."""
    ci, _ = _percentile_ci(values[1:])
    return {"value": None if not np.isfinite(values[0]) else float(values[0]), "ci95": ci}


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
    a, b, stat = _statistic(a, b, statistic, labels, groups)
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
    mean_a, mean_b = nanmean_rows(np.where(both, sa, np.nan)), nanmean_rows(np.where(both, sb, np.nan))
    return {
        "mean": _difference_entry(mean_a[0] - mean_b[0], mean_a[1:] - mean_b[1:], higher_is_better),
        "per_class": {
            name: _difference_entry(diff[0, j], diff[1:, j], higher_is_better) for j, name in enumerate(class_names)
        },
        "arms": {"a": _arm_entry(mean_a), "b": _arm_entry(mean_b)},
    }
