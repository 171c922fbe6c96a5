"""The one check that a path given for a folder is an existing folder."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["as_dir"]


def as_dir(path: str | os.PathLike[str], what: str, hint: str = "") -> Path:
    """``path`` as an absolute, resolved path of an existing folder.

    Args:
        path: the folder.
        what: what the folder is for, for the error message (``"BTCV dataset folder"``).
        hint: appended to the error message (e.g. the expected layout).

    Raises:
        FileNotFoundError: naming ``what`` and the path when nothing is there.
        NotADirectoryError: naming ``what`` and the path when it is not a folder.
    """
    root = Path(path).expanduser().resolve()
    tail = f" {hint}" if hint else ""
    if not root.exists():
        raise FileNotFoundError(f"{what} '{root}' does not exist.{tail}")
    if not root.is_dir():
        raise NotADirectoryError(f"{what} '{root}' is not a folder.{tail}")
    return root
