"""Writing files atomically: a temporary file beside the target, fsync, then a rename (never half-written)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "write_json_atomic"]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, fsync, and rename it over ``path`` (never half-written).

    Returns:
        The absolute path written. Raises ``ValueError`` when ``path`` is an existing folder.
    """
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise ValueError(f"{target} is a folder; give a file name.")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_json_atomic(content: Any, path: str | os.PathLike) -> Path:
    """Write ``content`` as JSON (indent 4) atomically; returns the absolute path."""
    return atomic_write_text(path, json.dumps(content, indent=4) + "\n")
