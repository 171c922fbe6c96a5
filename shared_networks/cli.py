"""The one way the data-preparation modules expose a command line (``fire``, as MONAI's own CLI)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["run_fire"]


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

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    fire.Fire(component, name=name, command=None if argv is None else list(argv), serialize=serialize)
