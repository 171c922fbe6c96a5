"""File helpers shared by the data-preparation modules: NIfTI names, datalist paths and JSON, atomic NIfTI writing."""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = [
    "NIFTI_SUFFIXES", "Issues", "check_disjoint", "is_nifti", "nifti_stem", "raise_or_collect", "read_json_object",
    "read_text", "relative_to", "resolve_path", "save_nifti",
]  # fmt: skip

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")

PathLike = str | os.PathLike[str]


def is_nifti(path: Path) -> bool:
    """Whether ``path`` is a visible NIfTI file (``.nii`` or ``.nii.gz``)."""
    return path.is_file() and not path.name.startswith(".") and path.name.endswith(NIFTI_SUFFIXES)


def nifti_stem(path: PathLike) -> str:
    """File name without the NIfTI suffix (``img0001.nii.gz`` -> ``img0001``)."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def resolve_path(root: Path, value: str) -> Path:
    """Resolve a datalist path: absolute paths stay, relative ones are taken from ``root``; ``..`` is folded."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = root / path
    return Path(os.path.normpath(path))


def relative_to(root: Path, value: str) -> str:
    """``value`` relative to ``root`` (POSIX separators) when it lies under it, else unchanged."""
    path = Path(value)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else value


_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32", codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}  # fmt: skip


def read_text(path: PathLike, what: str = "text file") -> str:
    """The text of a UTF-8 file (a UTF-8 byte-order mark is accepted and dropped).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, its encoding problem and where it is, for a UTF-16/32 file (byte-order mark) or
            bytes that are not UTF-8 (e.g. a latin-1 or cp1252 export): "save it as UTF-8".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist.")
    raw = path.read_bytes()
    for bom in sorted(_BOMS, key=len, reverse=True):
        if raw.startswith(bom):
            raise ValueError(f"{what} '{path}' is {_BOMS[bom]} text (byte-order mark); save it as UTF-8.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{what} '{path}' is not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} (line {line}) "
            "is not valid UTF-8 (a latin-1 or Windows export?); save it as UTF-8."
        ) from None


def read_json_object(path: Path, what: str = "Datalist") -> dict[str, Any]:
    """Read a JSON object from ``path`` (UTF-8, a byte-order mark accepted).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file if it is not UTF-8, not valid JSON or does not hold a JSON object.
    """
    try:
        content = json.loads(read_text(path, what))
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} '{path}' is not valid JSON: {err}.") from err
    except RecursionError as err:
        raise ValueError(f"{what} '{path}' is nested too deeply to be a datalist.") from err
    if not isinstance(content, dict):
        raise ValueError(f"{what} '{path}' must hold a JSON object, got {type(content).__name__}.")
    return content


def check_disjoint(source: str, datalist: Mapping[str, Sequence[Mapping[str, str]]]) -> None:
    """Check that no image is in two of training/validation/test and that pretrain holds no evaluation image.

    Raises:
        ValueError: naming ``source``, the two lists and the shared image.
    """
    pairs = (
        ("training", "validation"),
        ("training", "test"),
        ("validation", "test"),
        ("pretrain", "validation"),
        ("pretrain", "test"),
    )
    for first, second in pairs:
        shared = sorted({i["image"] for i in datalist[first]} & {i["image"] for i in datalist[second]})
        if shared:
            raise ValueError(
                f"{source}: image '{shared[0]}' is in both '{first}' and '{second}'; the lists must be disjoint."
            )


def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Save ``data`` as NIfTI (RAS affine, mm units) through a temporary file in the same folder."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(data.dtype)
    image.header.set_xyzt_units(xyz="mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".nii.gz", dir=path.parent)
    os.close(handle)
    try:
        nib.save(image, tmp_name)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


Issues = list[tuple[str, Exception]]


def raise_or_collect(issues: Issues | None, path: PathLike, error: Exception) -> None:
    """Raise ``error``, or, when ``issues`` is a list, append ``(path, error)`` to it (to report every problem)."""
    if issues is None:
        raise error
    issues.append((str(path), error))
