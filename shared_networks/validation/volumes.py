"""Checks of NIfTI volumes: readable files, dimensions and channels, grids, label values, intensities."""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from shared_networks.validation.filetypes import content_problem, file_problem
from shared_networks.validation.problems import ERROR, WARNING, Problem, ValidationReport, check_items, outside_link

__all__ = ["MAX_LABEL_VALUE", "MAX_VOXELS", "SPACING_ATOL", "VolumeSpec", "check_volume_item", "validate_volume_items"]

SPACING_ATOL = 1e-3  # mm: header spacings and affines closer than this are the same grid
MAX_LABEL_VALUE = 1 << 16  # label maps with larger values are checked with np.unique instead of a histogram
MAX_VOXELS = 1 << 29
"""Default limit on the voxels a NIfTI header may declare (536,870,912: a 512 x 512 x 2048 CT); larger files are
reported, not read, so that a crafted header cannot exhaust memory. ``max_voxels`` of the checks changes it."""
_REAL_KINDS = "biuf"  # bool, integer and floating data types: what the loaders can read as float32 intensities
_CHUNK = 1 << 22  # voxels cast to float32 at a time


@dataclass(frozen=True)
class VolumeSpec:
    """What the images and labels of a volume data set must be.

    Attributes:
        name: data set name for messages.
        channels: channels of one image file: 1 for a 3-D file, ``n`` for a 4-D file with ``n`` channels on its last
            axis (MSD Task01). An item whose ``image`` is a list of files (BraTS 2021) needs ``len(list) ==
            channels`` 3-D files.
        channel_names: names of the channels, for messages.
        label_values: every allowed label value (background 0 included).
    """

    name: str
    channels: int = 1
    channel_names: tuple[str, ...] = ()
    label_values: tuple[int, ...] = ()

    def channel(self, index: int) -> str:
        """``channel 2 (T1gd)``: the channel's index and name, for messages."""
        name = f" ({self.channel_names[index]})" if index < len(self.channel_names) else ""
        return f"channel {index}{name}"


@dataclass
class _Volume:
    path: Path
    shape: tuple[int, ...]
    zooms: tuple[float, ...]
    affine: np.ndarray
    data: np.ndarray | None  # as nibabel returns it: scl_slope and scl_inter applied, not yet cast to float32
    stored: np.dtype | None = None  # the header's data type
    scaling: tuple[float, float] | None = None  # (scl_slope, scl_inter) when the header scales the stored values


def _declared_bytes(img: Any) -> int:
    """Bytes a NIfTI file holds according to its header: the voxel data offset plus shape x data type size."""
    offset = getattr(img.dataobj, "offset", None)  # the file's vox_offset (the image's header copy holds 0)
    offset = img.header.get_data_offset() if offset is None else offset
    return int(offset) + math.prod(img.shape) * img.header.get_data_dtype().itemsize


def _stored_bytes(path: Path, limit: int) -> tuple[int, bool]:
    """``(bytes, complete)``: the uncompressed length of a file (read as a stream, at most ``limit + 1`` bytes
    counted), and whether its stream is complete (``False``: a gzip stream cut short)."""
    if not path.name.endswith(".gz"):
        return path.stat().st_size, True
    count = 0
    try:
        with gzip.open(path, "rb") as stream:
            while count <= limit:
                chunk = stream.read(1 << 20)
                if not chunk:
                    break
                count += len(chunk)
    except EOFError:
        return count, False
    return count, True


def _path_problem(path: Path, root: Path | None) -> Problem | None:
    """The error of a path that cannot be a volume: a link out of ``root``, a FIFO, folder or device (named, never
    opened), a file whose content is not its name's format or that cannot be read; ``None`` when there is none."""
    link = outside_link(path, root)
    if link is not None:
        return link
    problem = file_problem(path)  # a FIFO, folder or device is named, never opened
    if problem is None:
        try:
            problem = content_problem(path)
        except OSError as err:
            problem = f"cannot be read ({type(err).__name__}: {err})"
    return None if problem is None else Problem(ERROR, str(path), problem)


def _voxel_problem(img: Any, dtype: np.dtype, shape: tuple[int, ...], max_voxels: int) -> str | None:
    """What keeps the header's voxels from being read: a data type the loaders cannot read as float32 intensities
    (complex, RGB, other compound types), or more than ``max_voxels`` voxels; ``None`` when there is nothing."""
    if dtype.kind not in _REAL_KINDS:
        code = int(img.header["datatype"]) if "datatype" in img.header else "?"
        name = img.header.get_value_label("datatype") if "datatype" in img.header else str(dtype)
        return (
            f"has data type {name} (NIfTI datatype code {code}, numpy {dtype}): the bundles' loaders read real-valued "
            "voxels as float32; complex, RGB and other compound data are not supported"
        )
    voxels = math.prod(shape)
    if voxels > max_voxels:
        return (
            f"header declares shape {shape} = {voxels} voxels, more than the limit of {max_voxels} (max_voxels); the "
            "voxels are not read. Raise --max_voxels if the image is real."
        )
    return None


def _length_problem(path: Path, declared: int, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """How the file's (uncompressed) length disagrees with the ``declared`` bytes of its header, in either direction;
    ``None`` when they agree."""
    try:
        stored, complete = _stored_bytes(path, declared)
    except Exception as err:  # gzip.BadGzipFile, zlib.error, OSError ...
        return f"corrupt compressed data ({type(err).__name__}: {err})"
    what = f"header declares {declared} bytes (shape {shape}, {dtype})"
    if not complete or stored < declared:
        cut = f"its gzip stream is cut short (after at least {stored})" if not complete else f"it holds {stored}"
        return f"truncated or corrupt voxel data: {what} but {cut} (header and content disagree)"
    if stored > declared:
        return (
            f"{what} but holds at least {stored - declared} bytes more (header and content disagree: the header's "
            "shape or data type is wrong)"
        )
    return None


def _read_volume(
    path: Path, problems: list[Problem], read_data: bool, root: Path | None = None, max_voxels: int = MAX_VOXELS
) -> _Volume | None:
    """Header (and data) of a NIfTI file; ``None`` after recording an error when it is missing or unreadable.

    Never raises: any error of one file (MemoryError included) becomes a problem naming it. Before the voxels are read,
    the header's voxel count is held against ``max_voxels``, and the file's (uncompressed) length against what the
    header declares, in both directions.
    """
    problem = _path_problem(path, root)
    if problem is not None:
        problems.append(problem)
        return None
    try:
        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        affine = np.asarray(img.affine, dtype=float)
        declared = _declared_bytes(img)
        dtype = img.header.get_data_dtype()
        slope, inter = (float(v) for v in (getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)))
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError, zlib.error, ... for broken files
        problems.append(Problem(ERROR, str(path), f"not a readable NIfTI file ({type(err).__name__}: {err})"))
        return None
    error = _voxel_problem(img, dtype, shape, max_voxels)
    if error is None and (read_data or not path.name.endswith(".gz")):
        error = _length_problem(path, declared, shape, dtype)
    data = None
    if error is None and read_data:
        try:
            data = np.asanyarray(img.dataobj)
        except Exception as err:  # EOFError, OSError, ValueError, zlib.error, MemoryError ...
            error = f"truncated or corrupt voxel data ({type(err).__name__}: {err})"
    if error is not None:
        problems.append(Problem(ERROR, str(path), error))
        return None
    if not np.isfinite(affine).all():
        problems.append(Problem(ERROR, str(path), f"affine holds NaN or inf: {affine.tolist()}"))
    scaling = (slope, inter) if (slope, inter) != (1.0, 0.0) else None
    return _Volume(path, shape, zooms, affine, data, dtype, scaling)


def _not_finite(data: np.ndarray) -> tuple[int, int]:
    """``(voxels, of which NaN)`` that are not finite once cast to float32, as the bundles' loaders read images
    (``LoadImage``'s default dtype): a float64 value beyond float32's range becomes inf. In chunks: bounded memory."""
    if data.dtype.kind != "f":
        return 0, 0  # every bool and integer value is finite in float32 (uint64's maximum is 1.8e19)
    flat = data.ravel(order="K")  # a view of a C- or Fortran-ordered array
    bad = nan = 0
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, flat.size, _CHUNK):
            chunk = flat[start : start + _CHUNK].astype(np.float32, copy=False)
            count = chunk.size - int(np.count_nonzero(np.isfinite(chunk)))
            if count:
                bad += count
                nan += int(np.count_nonzero(np.isnan(chunk)))
    return bad, nan


def _overflow_cause(vol: _Volume, bad: int) -> str:
    """Why values become inf only when read as float32: the header's scaling, or stored values beyond float32."""
    assert vol.data is not None
    data = vol.data
    before = bad if data.dtype.itemsize <= 4 else int(data.size - np.count_nonzero(np.isfinite(data)))
    overflow = bad - before  # finite as nibabel returns them, inf once cast to float32
    if overflow == 0:
        return ""
    if vol.scaling is not None:
        slope, inter = vol.scaling
        what = f"{overflow} stored {vol.stored} values scaled by the header's scl_slope {slope:g}, scl_inter {inter:g}"
    else:
        what = f"{overflow} stored {vol.stored} values"
    return f"; {what} exceed float32's range (3.4e+38), and the loaders' cast to float32 makes them inf"


def _check_intensities(vol: _Volume, spec: VolumeSpec, problems: list[Problem], channel_axis: bool) -> None:
    """NaN/inf (as float32, what the loaders read), empty, constant image (or constant channel) of an image file."""
    data = vol.data
    if data is None:
        return
    if data.size == 0:
        problems.append(Problem(ERROR, str(vol.path), f"empty image (shape {vol.shape})"))
        return
    bad, nan = _not_finite(data)
    if bad:
        message = f"{bad} of {data.size} voxels are not finite ({nan} NaN, {bad - nan} inf)"
        problems.append(Problem(ERROR, str(vol.path), message + _overflow_cause(vol, bad)))
        return
    if channel_axis:
        channels = [(data[..., c], f"{spec.channel(c)} is constant") for c in range(data.shape[-1])]
    else:
        channels = [(data, "constant image")]
    for values, what in channels:
        lo, hi = values.min(), values.max()
        if np.float32(lo) == np.float32(hi):  # equal as the loaders read them
            problems.append(Problem(ERROR, str(vol.path), f"{what} (every voxel {lo})"))


def _label_values(data: np.ndarray) -> np.ndarray | None:
    """Distinct values of an integer-valued label map (``None`` when some value is not an integer)."""
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all() or not np.array_equal(data, np.round(data)):
            return None
    if np.issubdtype(data.dtype, np.bool_):
        data = data.view(np.uint8)
    lo, hi = data.min(), data.max()
    if not (0 <= lo and hi < MAX_LABEL_VALUE):
        return np.unique(data)
    flat = data.reshape(-1)
    counts = np.zeros(int(hi) + 1, dtype=np.int64)
    for start in range(0, flat.size, 1 << 22):  # a histogram in chunks: bounded memory, far faster than np.unique
        counts += np.bincount(flat[start : start + (1 << 22)].astype(np.intp), minlength=counts.size)
    return np.flatnonzero(counts)


def _check_label(vol: _Volume, spec: VolumeSpec, problems: list[Problem]) -> None:
    path = str(vol.path)
    shape = vol.shape[:3] if len(vol.shape) == 4 and vol.shape[3] == 1 else vol.shape
    if len(shape) != 3:
        problems.append(Problem(ERROR, path, f"label map is {len(vol.shape)}-D (shape {vol.shape}); it must be 3-D"))
        return
    if vol.data is None:
        return
    if vol.data.size == 0:
        problems.append(Problem(ERROR, path, f"empty label map (shape {vol.shape})"))
        return
    values = _label_values(vol.data)
    if values is None:
        problems.append(Problem(ERROR, path, "label map holds values that are not integers (or NaN/inf)"))
        return
    allowed = set(spec.label_values)
    outside = [v.item() for v in values if v.item() not in allowed]
    if allowed and outside:
        shown = ", ".join(str(v) for v in outside[:10]) + (" ..." if len(outside) > 10 else "")
        problems.append(Problem(ERROR, path, f"label values {shown} are outside the {spec.name} set {sorted(allowed)}"))
    elif values.size == 1 and values[0] == 0:
        problems.append(Problem(WARNING, path, "label map has no foreground: every voxel is background (0)"))


def _same_grid(vol: _Volume, ref: _Volume, problems: list[Problem], what: str) -> None:
    """Shape, spacing and affine of ``vol`` against the reference image ``ref``."""
    path = str(vol.path)
    if vol.shape[:3] != ref.shape[:3]:
        problems.append(
            Problem(ERROR, path, f"{what} has spatial shape {vol.shape[:3]} but '{ref.path}' has {ref.shape[:3]}")
        )
        return
    if not np.allclose(vol.zooms[:3], ref.zooms[:3], atol=SPACING_ATOL):
        spacing, ref_spacing = tuple(round(z, 4) for z in vol.zooms[:3]), tuple(round(z, 4) for z in ref.zooms[:3])
        problems.append(
            Problem(ERROR, path, f"{what} has voxel spacing {spacing} mm but '{ref.path}' has {ref_spacing} mm")
        )
        return
    if not np.allclose(vol.affine, ref.affine, atol=SPACING_ATOL):
        problems.append(
            Problem(
                ERROR,
                path,
                f"{what} has affine {np.round(vol.affine, 3).tolist()} but '{ref.path}' has "
                f"{np.round(ref.affine, 3).tolist()} (same shape and spacing, another origin or direction)",
            )
        )


def check_volume_item(
    item: Mapping[str, Any],
    spec: VolumeSpec,
    read_data: bool = True,
    root: Path | None = None,
    max_voxels: int = MAX_VOXELS,
) -> tuple[list[Problem], int]:
    """Check the image(s) and label of one datalist item.

    Args:
        item: ``{"image": path or [paths], "label": path (optional)}``.
        spec: what the files must be.
        read_data: read the voxels too (NaN/inf, constant images, label values, truncated data); ``False`` reads
            headers only.
        root: the data set folder: files reached through a symbolic link leading out of it are reported, not read.
        max_voxels: files whose header declares more voxels are reported, not read.

    Returns:
        ``(problems, number of files checked)``.
    """
    problems: list[Problem] = []
    paths = [Path(p) for p in item["image"]] if isinstance(item["image"], (list, tuple)) else [Path(item["image"])]
    ref: _Volume | None = None
    if len(paths) > 1 and len(paths) != spec.channels:
        problems.append(
            Problem(ERROR, str(paths[0].parent), f"{len(paths)} image files given; {spec.channels} are needed")
        )
    for index, path in enumerate(paths):
        vol = _read_volume(path, problems, read_data, root, max_voxels)
        if vol is None:
            continue
        shape, ndim = vol.shape, len(vol.shape)
        if len(paths) > 1 or spec.channels == 1:
            squeezed = ndim == 4 and shape[3] == 1
            if ndim != 3 and not squeezed:
                what = f"{spec.channel(index)} file" if len(paths) > 1 else f"{spec.name} image"
                problems.append(
                    Problem(ERROR, str(path), f"is {ndim}-D (shape {shape}); a {what} must be 3-D (one channel)")
                )
                continue
            _check_intensities(vol, spec, problems, channel_axis=False)
        else:
            names = f" ({', '.join(spec.channel_names)})" if spec.channel_names else ""
            if ndim != 4:
                problems.append(
                    Problem(
                        ERROR,
                        str(path),
                        f"is {ndim}-D (shape {shape}); a {spec.name} image must be 4-D with "
                        f"{spec.channels} channels{names} on its last axis",
                    )
                )
                continue
            if shape[3] != spec.channels:
                problems.append(
                    Problem(
                        ERROR,
                        str(path),
                        f"has {shape[3]} channels on its last axis (shape {shape}); {spec.channels} are needed{names}",
                    )
                )
                continue
            _check_intensities(vol, spec, problems, channel_axis=True)
        if ref is None:
            ref = vol
        else:
            _same_grid(vol, ref, problems, spec.channel(index) + " file")
    label_path = item.get("label")
    if label_path is not None:
        label = _read_volume(Path(label_path), problems, read_data, root, max_voxels)
        if label is not None:
            _check_label(label, spec, problems)
            if ref is not None:
                _same_grid(label, ref, problems, "label")
    return problems, len(paths) + (label_path is not None)


def validate_volume_items(
    report: ValidationReport,
    items: Sequence[Mapping[str, Any]],
    spec: VolumeSpec | Callable[[Mapping[str, Any]], VolumeSpec],
    read_data: bool = True,
    num_workers: int = 2,
    root: Path | None = None,
    max_voxels: int = MAX_VOXELS,
) -> ValidationReport:
    """Check every item with :func:`check_volume_item`, adding the problems to ``report``.

    Args:
        report: report to add to.
        items: datalist items.
        spec: the spec, or a function giving each item's spec.
        read_data: read voxel data too.
        num_workers: threads.
        root: the data set folder (symbolic links leading out of it are reported).
        max_voxels: limit on the voxels a header may declare.
    """
    spec_of = spec if callable(spec) else (lambda _: spec)
    check_items(
        report, items, lambda item: check_volume_item(item, spec_of(item), read_data, root, max_voxels), num_workers
    )
    return report
