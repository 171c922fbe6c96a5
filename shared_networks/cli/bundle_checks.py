"""Run the checks of MONAI model-zoo's CI on a bundle as it is, offline (directory and large_files.yml, version,
metadata, requirements, properties, data shape and TorchScript of configs/inference.* alone).

Command line::

    python -m shared_networks.cli.bundle_checks bundles/btcv_mae_segmentation
    python -m shared_networks.cli.bundle_checks bundles/btcv_mae_segmentation --net_in_out false --torchscript false
    python -m shared_networks.cli.bundle_checks dist/btcv_mae_segmentation --released true --download true  # full mode

See :func:`shared_networks.tools.bundle_checks.check_bundle` for every flag.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared_networks.cli import run_fire
from shared_networks.tools.bundle_checks import check_bundle

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared_networks.cli.bundle_checks BUNDLE [--net_in_out false] [--torchscript false] [--download true]
    [--released true] [--requirements false]``.

    Args:
        argv: command line arguments; ``None`` reads ``sys.argv``.
    """
    run_fire(check_bundle, "shared_networks.cli.bundle_checks", argv)


if __name__ == "__main__":
    main()
