"""Checks of 2-D images (chest radiographs): regular files in their name's format, readable, complete, single-frame,
grey or RGB(A), not constant."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared_networks.data.radiographs import PIL_MODE_MAX
from shared_networks.validation.filetypes import content_problem, file_problem
from shared_networks.validation.problems import ERROR, Problem, outside_link

__all__ = ["MAX_PIXELS", "check_png", "png_size"]

PathLike = str | os.PathLike[str]


MAX_PIXELS = 1 << 26
"""Default limit on the pixels an image header may declare (67,108,864: 8192 x 8192); larger images are reported,
not decoded, so that a small crafted file cannot exhaust memory. ``max_pixels`` of the checks changes it."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: PathLike) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG file's IHDR chunk, read before any decoding; ``None`` for another format.

    Raises:
        ValueError: for a PNG signature without a valid IHDR chunk.
    """
    with open(path, "rb") as f:
        head = f.read(24)
    if not head.startswith(_PNG_SIGNATURE):
        return None
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise ValueError("PNG signature without an IHDR chunk (truncated or corrupt header)")
    return struct.unpack(">II", head[16:24])


def check_png(
    path: PathLike, read_data: bool = True, root: PathLike | None = None, max_pixels: int = MAX_PIXELS
) -> tuple[list[Problem], int]:
    """Check one radiograph: a regular file in the format its name says (PNG, JPEG), a readable, complete,
    single-frame grey or RGB(A) image that is not constant.

    Never raises: any error (MemoryError and PIL's DecompressionBombError included) becomes a problem naming the file.

    Args:
        path: the image.
        read_data: decode the pixels too.
        root: the data set folder: a symbolic link leading out of it is reported, not read.
        max_pixels: an image whose header declares more pixels is reported, not decoded.

    Returns:
        ``(problems, 1)``.
    """
    path = Path(path)
    link = outside_link(path, root)
    if link is not None:
        return [link], 1
    problem = file_problem(path)  # a FIFO, folder or device is named, never opened
    if problem is not None:
        return [Problem(ERROR, str(path), problem)], 1
    try:
        problem = content_problem(path)  # JPEG bytes in a .png file ...
        if problem is not None:
            return [Problem(ERROR, str(path), problem)], 1
        size = png_size(path)
        if size is not None and size[0] * size[1] > max_pixels:
            message = (
                f"header declares {size[0]} x {size[1]} = {size[0] * size[1]} pixels, more than the limit of "
                f"{max_pixels} (max_pixels); not decoded. Raise --max_pixels if the image is real."
            )
            return [Problem(ERROR, str(path), message)], 1
        with Image.open(path) as img:
            mode, size, frames = img.mode, img.size, int(getattr(img, "n_frames", 1))
            if size[0] * size[1] > max_pixels:
                message = f"declares {size[0]} x {size[1]} pixels, more than the limit of {max_pixels} (max_pixels)"
                return [Problem(ERROR, str(path), message)], 1
            if read_data:
                img.load()
                pixels = np.asarray(img.convert("RGBA") if mode in ("P", "PA") else img)
    except UnidentifiedImageError as err:
        return [Problem(ERROR, str(path), f"not an image file ({err})")], 1
    except Image.DecompressionBombError as err:
        return [Problem(ERROR, str(path), f"refused by PIL as a decompression bomb ({err})")], 1
    except (OSError, SyntaxError, ValueError, zlib.error, struct.error) as err:  # truncated data, broken chunks/CRCs
        return [Problem(ERROR, str(path), f"truncated or corrupt image ({type(err).__name__}: {err})")], 1
    except Exception as err:  # MemoryError and anything else: reported, never raised
        return [Problem(ERROR, str(path), f"cannot be read ({type(err).__name__}: {err})")], 1
    problems = []
    if frames > 1:
        problems.append(Problem(ERROR, str(path), f"holds {frames} frames; a radiograph must be one 2-D image"))
    if mode not in PIL_MODE_MAX and mode not in ("P", "PA"):
        problems.append(Problem(ERROR, str(path), f"has PIL mode {mode!r}; expected grey, grey+alpha or RGB(A) pixels"))
    if min(size) < 1:
        problems.append(Problem(ERROR, str(path), f"empty image (size {size})"))
    elif read_data and not problems:
        grey = pixels[..., :3] if pixels.ndim == 3 and pixels.shape[-1] >= 3 else pixels
        grey = grey[..., 0] if grey.ndim == 3 and grey.shape[-1] == 2 else grey  # grey+alpha: the grey channel
        if grey.min() == grey.max():
            problems.append(Problem(ERROR, str(path), f"constant image (every pixel {grey.min()})"))
    return problems, 1
