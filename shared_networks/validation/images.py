"""Checks of 2-D images (chest radiographs): readable, complete, single-frame, grey or RGB(A), not constant."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared_networks.data.transforms import PIL_MODE_MAX
from shared_networks.validation.report import ERROR, Problem

__all__ = ["check_png"]

PathLike = str | os.PathLike[str]


def check_png(path: PathLike, read_data: bool = True) -> tuple[list[Problem], int]:
    """Check one radiograph: a readable, complete, single-frame grey or RGB(A) image that is not constant.

    Returns:
        ``(problems, 1)``.
    """
    path = Path(path)
    if not path.is_file():
        return [Problem(ERROR, str(path), "missing file")], 1
    try:
        with Image.open(path) as img:
            mode, size, frames = img.mode, img.size, int(getattr(img, "n_frames", 1))
            if read_data:
                img.load()
                pixels = np.asarray(img.convert("RGBA") if mode in ("P", "PA") else img)
    except UnidentifiedImageError as err:
        return [Problem(ERROR, str(path), f"not an image file ({err})")], 1
    except (OSError, SyntaxError, ValueError, zlib.error) as err:  # truncated data, broken chunks or CRCs
        return [Problem(ERROR, str(path), f"truncated or corrupt image ({type(err).__name__}: {err})")], 1
    problems = []
    if frames > 1:
        problems.append(Problem(ERROR, str(path), f"holds {frames} frames; a radiograph must be one 2-D image"))
    if mode not in PIL_MODE_MAX and mode not in ("P", "PA"):
        problems.append(
            Problem(ERROR, str(path), f"has PIL mode {mode!r}; expected grey, grey+alpha or RGB(A) pixels")
        )
    if min(size) < 1:
        problems.append(Problem(ERROR, str(path), f"empty image (size {size})"))
    elif read_data and not problems:
        grey = pixels[..., :3] if pixels.ndim == 3 and pixels.shape[-1] >= 3 else pixels
        grey = grey[..., 0] if grey.ndim == 3 and grey.shape[-1] == 2 else grey  # grey+alpha: the grey channel
        if grey.min() == grey.max():
            problems.append(Problem(ERROR, str(path), f"constant image (every pixel {grey.min()})"))
    return problems, 1
