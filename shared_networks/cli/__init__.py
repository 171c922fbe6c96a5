"""The command lines of the package (``fire``, as MONAI's own CLI), the top layer: each module is run with ``-m``.

* ``python -m shared_networks.cli.prepare btcv|brats|cxr14``: check a data set, then write its datalist (and for
  ``cxr14 --output_dir --cache_size`` the prepared store of the radiographs).
* ``python -m shared_networks.cli.validate btcv|brats|cxr14``: check a data set and report every problem.
* ``python -m shared_networks.cli.phantoms btcv|cxr|msd|brats2021``: write synthetic data sets.
* ``python -m shared_networks.cli.export``: pack a bundle into a release zip.
* ``python -m shared_networks.cli.bundle_checks``: model-zoo's checks of a bundle.
* ``python -m shared_networks.cli.report``: the HTML report of a pre-training run and its fine-tuning arms.
* ``python -m shared_networks.cli.study``: MAE against scratch on nested label fractions, with bootstrap CIs.
* ``python -m shared_networks.cli.to_dicom ct|radiograph``: NIfTI CT / PNG radiograph to DICOM, optionally uploaded to a
  PACS (STOW-RS).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["run_fire"]


class _StderrHandler(logging.StreamHandler):
    """A handler writing to ``sys.stderr`` as it is when a record is emitted: a command run again in the same process
    after ``sys.stderr`` was replaced (and the old stream closed) still logs, instead of failing on the closed one."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def run_fire(
    component: Any, name: str, argv: Sequence[str] | None = None, serialize: Callable[[Any], Any] | None = None
) -> None:
    """Run ``component`` (a function or a class of commands) as the command line of module ``name``.

    Args:
        component: what ``fire.Fire`` exposes; its docstrings become ``--help``.
        name: the module name shown in ``--help`` (``python -m <name>``).
        argv: command line arguments; ``None`` reads ``sys.argv``.
        serialize: how ``fire`` prints the returned value.
    """
    import fire

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", handlers=[_StderrHandler()])
    fire.Fire(component, name=name, command=None if argv is None else list(argv), serialize=serialize)
