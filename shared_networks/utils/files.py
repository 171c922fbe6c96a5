"""Writing files atomically: a temporary file beside the target, fsync, then a rename (never half-written), with the
permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask: ``0644`` under umask ``022``, ``0600``
under ``077``)."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_text", "current_umask", "new_file_mode", "write_json_atomic"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's file mode creation mask, read without changing it where Linux tells it (the ``Umask:`` line of
    ``/proc/self/status``, Linux 4.7+).

    Elsewhere it is read with ``os.umask``, which can only set it: set to ``0o077`` and restored at once, under a
    lock. The mask is process-wide, so a file another thread creates in that instant gets the strict ``0o077``
    mask, never a looser one.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permission bits ``open(path, "w")`` gives a new file now: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write`` on a temporary binary file beside ``path``, fsync, give it the mode of a plain ``open()``
    (:func:`new_file_mode`; ``tempfile`` creates files ``0600``) and rename it over ``path`` (never half-written).

    Returns:
        The absolute path written. Raises ``ValueError`` when ``path`` is an existing folder.
    """
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise ValueError(f"{target} is a folder; give a file name.")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`); returns the absolute path."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json_atomic(content: Any, path: str | os.PathLike) -> Path:
    """Write ``content`` as JSON (indent 4) atomically; returns the absolute path."""
    return atomic_write_text(path, json.dumps(content, indent=4) + "\n")
