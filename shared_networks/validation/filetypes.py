"""What stands at a data set path before anything reads it: a regular file (not a FIFO, folder or device), holding the
format its name says (magic bytes: ``file X is JPEG data, not PNG``).

The checks of every data set call :func:`file_problem` before they open a file: it only calls ``os.stat`` on the path
(through symbolic links), so a FIFO, which blocks forever when opened, or a link to ``/dev/zero`` is named, never read.
"""

from __future__ import annotations

import codecs
import gzip
import os
import stat
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MISSING", "content_problem", "describe_content", "file_problem", "nonregular_entries"]

PathLike = str | os.PathLike[str]

MISSING = "missing file"
_HEAD = 544  # bytes read to tell a format: a NIfTI-2 header's magic ends at 12, a NIfTI-1 one at 348; DICOM at 132
_NIFTI_HEADER_SIZES = {348: "NIfTI-1", 540: "NIfTI-2"}  # sizeof_hdr, the first 4 bytes of a NIfTI header

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG data"),
    (b"\xff\xd8\xff", "JPEG data"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"GIF87a", "GIF data"),
    (b"GIF89a", "GIF data"),
    (b"II*\x00", "TIFF data"),
    (b"MM\x00*", "TIFF data"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000 data"),
    (b"%PDF", "PDF data"),
    (b"PK\x03\x04", "zip data"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
    (b"\x89HDF\r\n\x1a\n", "HDF5 data"),
    (b"\x93NUMPY", "NumPy .npy data"),
    (b"NRRD", "NRRD data"),
)

_EXPECTED = (  # name suffix -> (what the content must be, how the message names it)
    (".nii.gz", "nifti.gz", "a gzip-compressed NIfTI file (.nii.gz)"),
    (".nii", "nifti", "an uncompressed NIfTI file (.nii)"),
    (".png", "PNG data", "PNG"),
    (".jpg", "JPEG data", "JPEG"),
    (".jpeg", "JPEG data", "JPEG"),
)


def file_problem(path: PathLike) -> str | None:
    """``None`` when ``path`` is a regular file (through symbolic links); else what stands there, for a message:
    :data:`MISSING`, ``"is a FIFO, not a regular file"``, ``"is a character device, not a regular file (a symbolic
    link to '/dev/zero')"``, ... Never opens ``path``: a FIFO or a device is named, never read."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    except OSError as err:
        return f"cannot be examined ({err.strerror or err})"
    link = ""
    if stat.S_ISLNK(info.st_mode):
        target = os.path.realpath(path)
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return f"{MISSING}: a symbolic link to '{target}', which does not exist"
        except OSError as err:  # a loop of links, a permission ...
            return f"is a symbolic link that cannot be followed ({err.strerror or err})"
        link = f" (a symbolic link to '{target}')"
    if stat.S_ISREG(info.st_mode):
        return None
    kind = next((name for test, name in _KINDS if test(info.st_mode)), "a special file")
    return f"is {kind}, not a regular file{link}"


def _nifti_header(head: bytes) -> str | None:
    """``"NIfTI-1"`` or ``"NIfTI-2"`` when ``head`` starts with a NIfTI header's sizeof_hdr (either byte order)."""
    if len(head) < 4:
        return None
    for order in "<>":
        found = _NIFTI_HEADER_SIZES.get(struct.unpack(f"{order}i", head[:4])[0])
        if found:
            return found
    return None


def _is_text(head: bytes) -> bool:
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a character cut at the end is fine
    except UnicodeDecodeError:
        return False
    return bool(text) and all(c.isprintable() or c in "\t\n\r\f\v" for c in text.lstrip("\ufeff"))


def describe_content(head: bytes) -> str:
    """What the first bytes of a file are: ``"PNG data"``, ``"JPEG data"``, ``"NIfTI-1 data"``, ``"text"``, ``"an
    empty file"``, ... or ``"data of an unknown format"``."""
    if not head:
        return "an empty file"
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    if head.startswith(b"BM") and head[6:10] == b"\0\0\0\0":  # a bitmap's reserved bytes: "BM" alone may be text
        return "BMP data"
    nifti = _nifti_header(head)
    if nifti:
        return f"{nifti} data"
    if head[128:132] == b"DICM":
        return "DICOM data"
    if _is_text(head):
        return "text"
    return "data of an unknown format"


def _expected(path: Path) -> tuple[str, str] | None:
    name = path.name.lower()
    return next(((kind, shown) for suffix, kind, shown in _EXPECTED if name.endswith(suffix)), None)


def content_problem(path: PathLike) -> str | None:
    """``None`` when the content of the regular file ``path`` is the format its name says (``.nii.gz``: gzip holding a
    NIfTI header; ``.nii``: a NIfTI header, sizeof_hdr 348 or 540; ``.png``; ``.jpg``/``.jpeg``), or the name says
    none of these; else what it is instead: ``"is JPEG data, not PNG"``, ``"is text, not a gzip-compressed NIfTI file
    (.nii.gz)"``.

    Reads the first bytes only (and the first decompressed bytes of a gzip stream); call :func:`file_problem` first.
    A stream that cannot be decompressed is left to the readers, which name it as truncated or corrupt.
    """
    path = Path(path)
    expected = _expected(path)
    if expected is None:
        return None
    kind, shown = expected
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    found = describe_content(head)
    if kind not in ("nifti", "nifti.gz"):
        return None if found == kind else f"is {found}, not {shown}"
    if kind == "nifti":
        if _nifti_header(head):
            return None
        hint = ": rename it to .nii.gz" if found == "gzip-compressed data" else ""
        return f"is {found}, not {shown}{hint}"
    if found != "gzip-compressed data":
        hint = ": compress it with gzip or rename it to .nii" if _nifti_header(head) else ""
        return f"is {found}, not {shown}{hint}"
    try:
        with gzip.open(path, "rb") as stream:
            inner = stream.read(_HEAD)
    except (OSError, EOFError, zlib.error):
        return None  # a broken stream: the NIfTI checks report it as truncated or corrupt
    if _nifti_header(inner):
        return None
    return f"is gzip-compressed {describe_content(inner)}, not {shown}: its first bytes are not a NIfTI header"


def nonregular_entries(root: PathLike, suffixes: Iterable[str], max_depth: int = 4) -> dict[Path, str]:
    """Entries under ``root`` (at most ``max_depth`` folders deep, hidden names and linked folders not entered) named
    like a data file (``suffixes``, any case) that are not regular files, each with :func:`file_problem`'s message:
    a FIFO, a folder, a device, a socket or a broken link standing where the data set's listing expects an image.
    Nothing is opened."""
    suffixes = tuple(s.lower() for s in suffixes)
    found: dict[Path, str] = {}

    def visit(folder: Path, depth: int) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.name.lower().endswith(suffixes) and not entry.is_file():
                problem = file_problem(entry.path)
                if problem is not None:
                    found[Path(entry.path)] = problem
                    continue
            if depth < max_depth and entry.is_dir(follow_symlinks=False):
                visit(Path(entry.path), depth + 1)

    visit(Path(root), 1)
    return found
