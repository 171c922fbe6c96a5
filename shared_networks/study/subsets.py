"""The study's subsets of the training list: nested label fractions drawn by patient, and the held-out split (a
fraction of the training patients, or one of K folds) that stands in for the test split while settings are chosen."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["check_fractions", "check_held_out", "group_key", "nested_subsets", "tuning_split"]


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


def check_held_out(tune_fraction: float, tune_folds: int) -> None:
    """``ValueError`` when both ways of holding training patients out are asked for."""
    if int(tune_folds) and float(tune_fraction):
        raise ValueError("give tune_fraction or tune_folds, not both: each holds training patients out its own way.")


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


def _held_fold(order: Sequence[str], folds: int, fold: int) -> set[str]:
    """Fold ``fold`` of ``folds``: every ``folds``-th group of the seeded order, from position ``fold``."""
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"tune_folds {folds!r} must be at least 2 and the fold {fold!r} in [0, {folds - 1}].")
    if len(order) < folds:
        raise ValueError(
            f"tune_folds {folds} needs at least {folds} training patients or cases, the datalist has {len(order)}."
        )
    return set(order[fold::folds])


def _held_fraction(order: Sequence[str], fraction: float) -> set[str]:
    """The first ``fraction`` of the seeded order, at least one group held out and one kept."""
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"tune_fraction {fraction!r} must lie in (0, 1): the share of training patients held out.")
    if len(order) < 2:
        raise ValueError(f"tune_fraction needs at least 2 training patients or cases, the datalist has {len(order)}.")
    return set(order[: min(len(order) - 1, _fraction_size(float(fraction), len(order)))])


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
    held = _held_fold(order, int(folds), int(fold)) if int(folds) else _held_fraction(order, fraction)
    test = [i for i in items if group_key(i) in held]
    images = {json.dumps(i.get("image"), sort_keys=True) for i in test}
    # other lists (pre-training's) lose the held-out images too: they stand for unseen test data
    out = {k: [i for i in v if json.dumps(i.get("image"), sort_keys=True) not in images] for k, v in datalist.items()}
    out["training"] = [i for i in items if group_key(i) not in held]
    out["test"] = test
    return out
