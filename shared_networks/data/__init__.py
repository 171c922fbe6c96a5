"""Datalists and synthetic data sets for the MAE bundles.

* :mod:`shared_networks.data.btcv`: BTCV abdominal CT datalists (Synapse and tutorial layouts).
* :mod:`shared_networks.data.cxr14`: NIH ChestX-ray14 datalists (14 findings, patient-wise validation split).
* :mod:`shared_networks.data.phantoms`: synthetic CT phantoms in the BTCV tutorial layout and synthetic chest
  radiographs in the ChestX-ray14 layout.

The names below are imported lazily so that ``python -m shared_networks.data.btcv`` (or ``.cxr14``, ``.phantoms``)
does not import its own module twice.
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
    "CXR14_FINDINGS": "shared_networks.data.cxr14",
    "cxr14_datalist": "shared_networks.data.cxr14",
    "find_cxr14_images": "shared_networks.data.cxr14",
    "list_xray_inputs": "shared_networks.data.cxr14",
    "read_cxr14_labels": "shared_networks.data.cxr14",
    "write_cxr14_datalist": "shared_networks.data.cxr14",
    "make_cxr_phantom": "shared_networks.data.phantoms",
    "write_cxr14_phantom_dataset": "shared_networks.data.phantoms",
    "MODALITIES": "shared_networks.data.brats",
    "brats_datalist": "shared_networks.data.brats",
    "brats_inference_inputs": "shared_networks.data.brats",
    "find_brats_cases": "shared_networks.data.brats",
    "write_brats_datalist": "shared_networks.data.brats",
    "make_brain_phantom": "shared_networks.data.brats_phantoms",
    "write_brats2021_phantom_dataset": "shared_networks.data.brats_phantoms",
    "write_msd_phantom_dataset": "shared_networks.data.brats_phantoms",
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
