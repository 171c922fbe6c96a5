"""Pack one bundle into a release zip (configs, docs, LICENSE, weights, the runtime layers of ``shared_networks``).

Command line::

    python -m shared_networks.cli.export --bundle bundles/btcv_mae_segmentation --out dist \\
        --base_url https://github.com/<owner>/<repo>/releases/download/v0.3.0 [--config_overrides quick]

See :func:`shared_networks.tools.export.export_bundle` for every flag.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared_networks.cli import run_fire
from shared_networks.tools.export import export_bundle

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared_networks.cli.export --bundle DIR [--out dist] [--base_url URL] [--config_overrides quick]``.

    Args:
        argv: command line arguments; ``None`` reads ``sys.argv``.
    """
    run_fire(export_bundle, "shared_networks.cli.export", argv)


if __name__ == "__main__":
    main()
