"""Datalists and synthetic data sets for the MAE bundles.

* :mod:`shared_networks.data.btcv`: BTCV abdominal CT datalists (Synapse and tutorial layouts).
* :mod:`shared_networks.data.phantoms`: synthetic CT phantoms written in the BTCV tutorial layout.

The names below are imported lazily so that ``python -m shared_networks.data.btcv`` (or ``.phantoms``) does not
import its own module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "BTCV_LABELS": "shared_networks.data.btcv",
    "TRANSUNET_TEST_CASES": "shared_networks.data.btcv",
    "btcv_datalist": "shared_networks.data.btcv",
    "find_btcv_cases": "shared_networks.data.btcv",
    "write_btcv_datalist": "shared_networks.data.btcv",
    "make_ct_phantom": "shared_networks.data.phantoms",
    "write_btcv_phantom_dataset": "shared_networks.data.phantoms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the public names of the submodules on first use.

    Args:
        name: attribute looked up on the package.

    Raises:
        AttributeError: if ``name`` is not a public name of the package.
    """
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the module attributes including the lazily imported public names."""
    return sorted(set(globals()) | set(__all__))
