"""Checks of the files a client uploads to MONAI Label's datastore: only images and label maps the bundles read.

A file is accepted when its name ends in an extension the bundles read (images: ``.nii.gz``, ``.nii``, ``.png``;
label maps: ``.nii.gz``, ``.nii``) and its bytes are that format: a gzip stream holding a NIfTI-1/2 header whose data
fits in what the stream decompresses to (and no more: a gzip bomb is refused), a NIfTI header followed by its data, a
PNG that Pillow decodes. Anything else is refused with :class:`UploadRefused` (HTTP 415), naming the file and what its
bytes are. The size limit of a whole request is the guard's (HTTP 413, ``server_guard.py``).

This module needs neither MONAI Label nor MONAI (numpy and, for PNG, Pillow).
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "LABEL_EXTENSIONS", "UploadRefused", "check_upload", "extension_of"]

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".png")
LABEL_EXTENSIONS = (".nii.gz", ".nii")
MAX_VOXELS = 2**31  # 2 G voxels: larger than any CT or 4-channel MRI the bundles take
_PNG = b"\x89PNG\r\n\x1a\n"
_MAGIC = {  # what some bytes are, for the message
    b"\xff\xd8\xff": "JPEG data",
    b"GIF8": "GIF data",
    b"PK\x03\x04": "a ZIP archive",
    b"%PDF": "a PDF document",
    b"\x7fELF": "an executable (ELF)",
    b"DICM": "DICOM data",
    b"\x1f\x8b": "gzip data",
    _PNG: "PNG data",
}
_NIFTI_BYTES = {  # datatype code -> bytes per voxel (the types nibabel reads)
    2: 1,
    4: 2,
    8: 4,
    16: 4,
    64: 8,
    256: 1,
    512: 2,
    768: 4,
    1024: 8,
    1280: 8,
    32: 8,
    128: 3,
    1792: 16,
    2304: 4,
}


class UploadRefused(ValueError):
    """An uploaded file that is not an image (or label map) the bundles read; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 415) -> None:
        super().__init__(message)
        self.status = status


def extension_of(filename: str, allowed: tuple[str, ...]) -> str:
    """The extension of ``filename`` among ``allowed`` (longest first), or :class:`UploadRefused` naming it."""
    for ext in sorted(allowed, key=len, reverse=True):
        if filename.lower().endswith(ext) and len(filename) > len(ext):
            return ext
    raise UploadRefused(f"Uploaded file '{filename}': the server takes {list(allowed)} files only.")


def _what(head: bytes) -> str:
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    if head[:64].isascii() and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:64]):
        return "text"
    return "data of an unknown format"


def _nifti_header(head: bytes, filename: str) -> tuple[int, int]:
    """``(vox_offset, data bytes)`` from a NIfTI-1 or NIfTI-2 header at the start of ``head``."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348 and head[344:347] in (b"n+1", b"ni1"):
            dim = struct.unpack(endian + "8h", head[40:56])
            datatype = struct.unpack(endian + "h", head[70:72])[0]
            offset = max(int(struct.unpack(endian + "f", head[108:112])[0]), 352)
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540 and head[4:7] in (b"n+2", b"ni2"):
            datatype = struct.unpack(endian + "h", head[12:14])[0]
            dim = struct.unpack(endian + "8q", head[16:80])
            offset = max(struct.unpack(endian + "q", head[168:176])[0], 544)
            break
    else:
        raise UploadRefused(f"Uploaded file '{filename}' is {_what(head)}, not a NIfTI image (no NIfTI header).")
    ndim = dim[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dim[1 : ndim + 1]):
        raise UploadRefused(f"Uploaded file '{filename}': NIfTI header with invalid dimensions {list(dim)}.")
    if datatype not in _NIFTI_BYTES:
        raise UploadRefused(f"Uploaded file '{filename}': NIfTI data type code {datatype} is not supported.")
    voxels = int(np.prod([float(d) for d in dim[1 : ndim + 1]]))
    if voxels > MAX_VOXELS:
        raise UploadRefused(f"Uploaded file '{filename}': {voxels} voxels, more than {MAX_VOXELS}.", status=413)
    return offset, voxels * _NIFTI_BYTES[datatype]


def _header_complete(head: bytes) -> bool:
    return len(head) >= 540 or (len(head) >= 348 and head[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c"))


def _check_nifti_gz(f: BinaryIO, filename: str) -> None:
    magic = f.read(2)
    if magic != b"\x1f\x8b":
        raise UploadRefused(f"Uploaded file '{filename}' is {_what(magic + f.read(62))}, not gzip-compressed NIfTI.")
    f.seek(0)
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)  # one gzip member; its CRC and length are checked at its end
    head, total, needed = bytearray(), 0, None
    try:
        while not stream.eof:
            chunk = stream.unconsumed_tail or f.read(1 << 20)
            if not chunk:
                raise UploadRefused(f"Uploaded file '{filename}' is truncated: its gzip stream does not end.")
            data = stream.decompress(chunk, 1 << 20)
            total += len(data)
            if needed is None:
                head += data
                if _header_complete(head):
                    offset, size = _nifti_header(bytes(head), filename)
                    needed = offset + size
            if needed is not None and total > needed:
                raise UploadRefused(
                    f"Uploaded file '{filename}' decompresses to more bytes than its NIfTI header declares ({needed})."
                )
    except zlib.error as e:
        raise UploadRefused(f"Uploaded file '{filename}' is corrupt gzip data: {e}.") from None
    if stream.unused_data or f.read(1):
        raise UploadRefused(f"Uploaded file '{filename}' has data after its gzip stream.")
    if needed is None:
        _nifti_header(bytes(head), filename)  # too short for a header: refused, naming what it is
    elif total < needed:
        raise UploadRefused(
            f"Uploaded file '{filename}' is truncated: {total} bytes decompressed, its NIfTI header needs {needed}."
        )


def _check_nifti(f: BinaryIO, filename: str, size: int) -> None:
    offset, data = _nifti_header(f.read(544), filename)
    if size < offset + data:
        raise UploadRefused(f"Uploaded file '{filename}' is truncated: {size} bytes, its header needs {offset + data}.")


def _check_png(f: BinaryIO, filename: str) -> None:
    head = f.read(64)
    if not head.startswith(_PNG):
        raise UploadRefused(f"Uploaded file '{filename}' is {_what(head)}, not PNG.")
    from PIL import Image

    f.seek(0)
    try:
        with Image.open(f) as img:
            if img.width * img.height > MAX_VOXELS:
                raise UploadRefused(f"Uploaded file '{filename}': {img.width} x {img.height} pixels.", status=413)
            img.load()  # decodes every row: a truncated or corrupt PNG fails here
    except UploadRefused:
        raise
    except Exception as e:  # Pillow raises several types for corrupt data
        raise UploadRefused(f"Uploaded file '{filename}' is a corrupt PNG: {e}.") from None


def check_upload(f: BinaryIO, filename: str, allowed: tuple[str, ...]) -> str:
    """Checks the uploaded file ``f`` (named ``filename`` by the client); returns its extension.

    Raises:
        UploadRefused: naming the file: an extension not in ``allowed``, or bytes that are not that format.
    """
    ext = extension_of(filename, allowed)
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    if size == 0:
        raise UploadRefused(f"Uploaded file '{filename}' is empty.")
    if ext == ".nii.gz":
        _check_nifti_gz(f, filename)
    elif ext == ".nii":
        _check_nifti(f, filename, size)
    else:
        _check_png(f, filename)
    f.seek(0)
    return ext
