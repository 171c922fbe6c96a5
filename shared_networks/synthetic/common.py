"""Helpers shared by the phantom generators: geometry checks, per-case seeds, knot interpolation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["MIN_SIZE", "case_seed", "check_geometry", "interp_matrix"]

MIN_SIZE = 8  # smallest accepted size of each axis


def check_geometry(
    shape: Sequence[int], spacing: Sequence[float]
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Validate and normalise ``shape`` and ``spacing``.

    Raises:
        ValueError: if ``shape`` is not 3 integers >= ``MIN_SIZE`` or ``spacing`` not 3 positive finite numbers.
    """
    try:
        values = [int(v) for v in shape]
        ok = len(values) == 3 and all(v == s and v >= MIN_SIZE for v, s in zip(values, shape, strict=True))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape must be 3 integers of at least {MIN_SIZE}, got {shape!r}.")
    try:
        steps = [float(v) for v in spacing]
        ok = len(steps) == 3 and all(math.isfinite(v) and v > 0 for v in steps)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing!r}.")
    return (values[0], values[1], values[2]), (steps[0], steps[1], steps[2])


def interp_matrix(n: int, k: int) -> np.ndarray:
    """``(n, k)`` matrix interpolating ``k`` evenly spread knots linearly onto ``n`` points."""
    positions = np.linspace(0.0, k - 1.0, n)
    knots = np.arange(k, dtype=float)
    return np.stack([np.interp(positions, knots, column) for column in np.eye(k)], axis=1)


def case_seed(seed: int, case: int) -> int:
    """Independent seed of case ``case`` of a data set generated with ``seed``."""
    return int(np.random.SeedSequence([seed, case]).generate_state(1)[0])
