"""Splits of the labelled BTCV cases into training, validation and test: seeded, or the TransUNet test cases.

* :func:`seeded_split`: the cases shuffled with ``numpy.random.default_rng(seed)``; test, then validation, then
  training are cut from the shuffle.
* :func:`transunet_split`: test is the cases of :data:`TRANSUNET_TEST_CASES` that are present; validation is drawn
  with ``seed`` from the others.

The third split, ``"dataset_json"`` (the tutorial's ``dataset_0.json``), is read with the datalist files in
:mod:`shared_networks.data.btcv`, which calls these.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from shared_networks.data.btcv_layouts import case_number

__all__ = ["SPLITS", "TRANSUNET_TEST_CASES", "check_split_arguments", "seeded_split", "transunet_split"]

logger = logging.getLogger("shared_networks.data.btcv")  # logs under the datalist module's name

TRANSUNET_TEST_CASES: tuple[int, ...] = (1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38)
"""Case numbers of the usual 12-case test set of TransUNet / Swin-UNETR papers (the other 18 labelled cases train)."""

SPLITS: tuple[str, ...] = ("seeded", "transunet", "dataset_json")
"""Allowed values of the ``split`` argument of :func:`~shared_networks.data.btcv.btcv_datalist`."""


def _round_half_up(value: float) -> int:
    """Round a non-negative number to the nearest integer, halves upwards (2.5 -> 3)."""
    return int(math.floor(value + 0.5))


def check_split_arguments(
    split: str, seed: int, val_fraction: float, test_fraction: float, num_val: int | None
) -> None:
    """Validate the split arguments of :func:`~shared_networks.data.btcv.btcv_datalist`.

    Raises:
        ValueError: naming the argument and what is wrong with it.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown BTCV split {split!r}; allowed splits are {', '.join(repr(s) for s in SPLITS)}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}.")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    if float(val_fraction) + float(test_fraction) >= 1.0:
        raise ValueError(
            "val_fraction + test_fraction must be below 1 to leave training cases, "
            f"got {val_fraction} + {test_fraction}."
        )
    if num_val is not None and (isinstance(num_val, bool) or not isinstance(num_val, (int, np.integer)) or num_val < 0):
        raise ValueError(f"num_val must be None or a non-negative integer, got {num_val!r}.")


def seeded_split(
    cases: list[dict[str, str]], seed: int, val_fraction: float, test_fraction: float, num_val: int | None
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """Shuffle the labelled cases with ``seed`` and cut test, then validation, then training.

    Returns:
        ``(training, validation, test)``, each sorted like ``cases``.
    """
    n = len(cases)
    if n == 0:
        return [], [], []
    if n == 1:
        logger.warning("Only one labelled BTCV case: it is used for training; validation and test are empty.")
        return list(cases), [], []
    if n == 2:
        n_test = 0
        n_val = 0 if num_val == 0 or (num_val is None and val_fraction == 0) else 1
        if num_val is not None and num_val > 1:
            raise ValueError(f"num_val={num_val} leaves no training case: only 2 labelled BTCV cases were found.")
        logger.warning("Only two labelled BTCV cases: the test list is empty.")
    else:
        min_test = 1 if test_fraction > 0 else 0
        n_test = max(min_test, _round_half_up(test_fraction * n))
        if num_val is not None:
            n_val = int(num_val)
            if n_val + min_test >= n:
                raise ValueError(
                    f"num_val={n_val} leaves no training case: only {n} labelled BTCV cases were found "
                    f"({min_test} kept for test)."
                )
            n_test = min(n_test, n - 1 - n_val)
        else:
            min_val = 1 if val_fraction > 0 else 0
            n_val = max(min_val, _round_half_up(val_fraction * n))
            while n_test + n_val > n - 1:  # keep at least one training case
                if n_test >= n_val and n_test > min_test:
                    n_test -= 1
                else:
                    n_val -= 1
    order = np.random.default_rng(seed).permutation(n)
    test_idx = sorted(int(i) for i in order[:n_test])
    val_idx = sorted(int(i) for i in order[n_test : n_test + n_val])
    train_idx = sorted(int(i) for i in order[n_test + n_val :])
    return [cases[i] for i in train_idx], [cases[i] for i in val_idx], [cases[i] for i in test_idx]


def transunet_split(
    cases: list[dict[str, str]], seed: int, val_fraction: float, num_val: int | None
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """Test on the TransUNet cases that are present; carve validation from the others with ``seed``.

    Returns:
        ``(training, validation, test)``, each sorted like ``cases``.
    """
    test_numbers = set(TRANSUNET_TEST_CASES)
    test = [c for c in cases if case_number(Path(c["image"])) in test_numbers]
    pool = [c for c in cases if case_number(Path(c["image"])) not in test_numbers]
    if len(test) < len(TRANSUNET_TEST_CASES):
        logger.warning("Only %d of the %d TransUNet test cases are present.", len(test), len(TRANSUNET_TEST_CASES))
    n_pool = len(pool)
    if num_val is not None:
        n_val = int(num_val)
        if n_val > 0 and n_val >= n_pool:
            raise ValueError(
                f"num_val={n_val} leaves no training case: only {n_pool} labelled BTCV cases lie outside the "
                "TransUNet test set."
            )
    else:
        n_val = max(1, _round_half_up(val_fraction * n_pool)) if n_pool > 1 and val_fraction > 0 else 0
        n_val = min(n_val, max(n_pool - 1, 0))
    order = np.random.default_rng(seed).permutation(n_pool)
    val_idx = sorted(int(i) for i in order[:n_val])
    train_idx = sorted(int(i) for i in order[n_val:])
    return [pool[i] for i in train_idx], [pool[i] for i in val_idx], test
