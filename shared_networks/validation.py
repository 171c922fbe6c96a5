"""Checks a whole data set before training and reports every problem at once, each naming its file.

One pass over a BTCV, brain tumour (MSD Task01 / BraTS 2021) or ChestX-ray14 folder finds:

* files that are missing, unpaired (an image without label, a label without image) or incomplete (a BraTS case without
  a modality), and label-file rows that do not parse;
* NIfTI and PNG files that cannot be read: not NIfTI/PNG at all, a truncated gzip stream, a corrupt PNG chunk
  (the voxel data are read in full: a truncated ``.nii.gz`` has a readable header and fails only there);
* 2D/3D/4D confusion and channel counts: a CT that is not 3-D, an MSD image that is not 4-D with 4 modalities on its
  last axis, a BraTS modality file that is not 3-D, a label map that is not 3-D, a multi-frame or CMYK radiograph;
* image and label on different grids: shape, voxel spacing, or affine (origin and direction);
* label values outside the data set's declared set, or not integers;
* NaN or infinite intensities, empty images and constant images (or constant modalities);
* warnings, not errors: a label map with no foreground voxel.

Command line (prints the report, exits with status 1 when there is an error)::

    python -m shared_networks.validation btcv --dataset_dir DIR
    python -m shared_networks.validation brats --dataset_dir DIR
    python -m shared_networks.validation cxr14 --dataset_dir DIR

The data-preparation commands (``python -m shared_networks.data.btcv`` etc.) run the same checks and refuse to write a
datalist from a data set with errors.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from shared_networks.io import atomic_write_text

__all__ = [
    "ERROR", "WARNING", "DatasetError", "Problem", "ValidationReport", "VolumeSpec", "check_png", "check_volume_item",
    "as_bool", "require_valid", "validate_brats", "validate_btcv", "validate_cxr14", "validate_volume_items",
]  # fmt: skip

logger = logging.getLogger(__name__)

ERROR = "error"
WARNING = "warning"
SPACING_ATOL = 1e-3  # mm: header spacings and affines closer than this are the same grid
MAX_LABEL_VALUE = 1 << 16  # label maps with larger values are checked with np.unique instead of a histogram

PathLike = str | os.PathLike[str]


class DatasetError(ValueError):
    """A data set holds errors; the message is the full report."""


@dataclass(frozen=True)
class Problem:
    """One problem of one file.

    Attributes:
        severity: :data:`ERROR` (the data set cannot be used) or :data:`WARNING` (suspicious, usable).
        path: the file (or folder) concerned.
        message: what is wrong.
    """

    severity: str
    path: str
    message: str

    def __str__(self) -> str:
        where = "" if f"'{self.path}'" in self.message else f"{self.path}: "  # messages that quote their file
        return f"{self.severity.upper()}: {where}{self.message}"


@dataclass
class ValidationReport:
    """Every problem found in a data set, in file order.

    Attributes:
        dataset: name of the data set kind (``BTCV``, ``MSD Task01``, ...).
        root: the data set folder.
        problems: the problems found.
        num_files: number of files checked.
    """

    dataset: str
    root: str
    problems: list[Problem] = field(default_factory=list)
    num_files: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        """No error (warnings allowed)."""
        return not self.errors

    def error(self, path: PathLike, message: str) -> None:
        self.problems.append(Problem(ERROR, str(path), message))

    def warning(self, path: PathLike, message: str) -> None:
        self.problems.append(Problem(WARNING, str(path), message))

    def summary(self) -> str:
        """One line: the data set, the number of files, errors and warnings."""
        return (
            f"{self.dataset} data set '{self.root}': {self.num_files} files checked, {len(self.errors)} error(s), "
            f"{len(self.warnings)} warning(s)."
        )

    def format(self, max_shown: int | None = 100) -> str:
        """The summary line, then one line per problem (errors first; at most ``max_shown`` of each kind)."""
        lines = [self.summary()]
        for kind in (self.errors, self.warnings):
            shown = kind if max_shown is None else kind[:max_shown]
            lines += [f"  {p}" for p in shown]
            if len(kind) > len(shown):
                lines.append(f"  ... and {len(kind) - len(shown)} more {kind[0].severity}(s)")
        return "\n".join(lines)

    def raise_for_errors(self, max_shown: int | None = 100) -> None:
        """Raise :class:`DatasetError` with the report when there is an error."""
        if self.errors:
            raise DatasetError(self.format(max_shown))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": self.root,
            "num_files": self.num_files,
            "errors": [{"path": p.path, "message": p.message} for p in self.errors],
            "warnings": [{"path": p.path, "message": p.message} for p in self.warnings],
        }

    def write_json(self, path: PathLike) -> Path:
        """Write every problem as JSON (atomically)."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=4) + "\n")


def as_bool(value: object, name: str) -> bool:
    """A command-line flag as a bool: ``True``/``False`` and the strings ``true``/``false``/``yes``/``no``/``1``/``0``.

    Raises:
        ValueError: naming ``name`` for anything else (``fire`` passes ``--flag false`` as the string ``"false"``).
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "false", "no", "0"):
        return text in ("true", "yes", "1")
    raise ValueError(f"{name} must be true or false, got {value!r}.")


def require_valid(report: ValidationReport, max_shown: int | None = 100) -> None:
    """Log the report's summary and warnings; raise :class:`DatasetError` (the full report) when it has an error."""
    if report.ok:
        logger.info(report.summary())
        for problem in report.warnings[:max_shown]:
            logger.warning(str(problem))
    report.raise_for_errors(max_shown)


def _collect(report: ValidationReport, issues: Iterable[tuple[str, Exception]]) -> None:
    for path, err in issues:
        report.error(path, str(err))


# ---- NIfTI volumes ----


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
    data: np.ndarray | None


def _read_volume(path: Path, problems: list[Problem], read_data: bool) -> _Volume | None:
    """Header (and data) of a NIfTI file; ``None`` after recording an error when it is missing or unreadable."""
    if not path.is_file():
        problems.append(Problem(ERROR, str(path), "missing file"))
        return None
    try:
        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        affine = np.asarray(img.affine, dtype=float)
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError, zlib.error, ... for broken files
        problems.append(Problem(ERROR, str(path), f"not a readable NIfTI file ({type(err).__name__}: {err})"))
        return None
    data = None
    if read_data:
        try:
            data = np.asanyarray(img.dataobj)
        except (EOFError, OSError, ValueError, zlib.error) as err:
            problems.append(
                Problem(ERROR, str(path), f"truncated or corrupt voxel data ({type(err).__name__}: {err})")
            )
            return None
    if not np.isfinite(affine).all():
        problems.append(Problem(ERROR, str(path), f"affine holds NaN or inf: {affine.tolist()}"))
    return _Volume(path, shape, zooms, affine, data)


def _check_intensities(vol: _Volume, spec: VolumeSpec, problems: list[Problem], channel_axis: bool) -> None:
    """NaN/inf, empty, constant image (or constant channel) of an image file."""
    data = vol.data
    if data is None:
        return
    if data.size == 0:
        problems.append(Problem(ERROR, str(vol.path), f"empty image (shape {vol.shape})"))
        return
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        bad = int(data.size - np.count_nonzero(finite))
        if bad:
            nan = int(np.count_nonzero(np.isnan(data)))
            message = f"{bad} of {data.size} voxels are not finite ({nan} NaN, {bad - nan} inf)"
            problems.append(Problem(ERROR, str(vol.path), message))
            return
    if channel_axis:
        for c in range(data.shape[-1]):
            channel = data[..., c]
            lo, hi = channel.min(), channel.max()
            if lo == hi:
                problems.append(Problem(ERROR, str(vol.path), f"{spec.channel(c)} is constant (every voxel {lo})"))
    else:
        lo, hi = data.min(), data.max()
        if lo == hi:
            problems.append(Problem(ERROR, str(vol.path), f"constant image (every voxel {lo})"))


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
        problems.append(
            Problem(ERROR, path, f"label values {shown} are outside the {spec.name} set {sorted(allowed)}")
        )
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
                ERROR, path, f"{what} has affine {np.round(vol.affine, 3).tolist()} but '{ref.path}' has "
                f"{np.round(ref.affine, 3).tolist()} (same shape and spacing, another origin or direction)",
            )
        )  # fmt: skip


def check_volume_item(item: Mapping[str, Any], spec: VolumeSpec, read_data: bool = True) -> tuple[list[Problem], int]:
    """Check the image(s) and label of one datalist item.

    Args:
        item: ``{"image": path or [paths], "label": path (optional)}``.
        spec: what the files must be.
        read_data: read the voxels too (NaN/inf, constant images, label values, truncated data); ``False`` reads
            headers only.

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
        vol = _read_volume(path, problems, read_data)
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
                        ERROR, str(path), f"is {ndim}-D (shape {shape}); a {spec.name} image must be 4-D with "
                        f"{spec.channels} channels{names} on its last axis",
                    )
                )  # fmt: skip
                continue
            if shape[3] != spec.channels:
                problems.append(
                    Problem(
                        ERROR, str(path), f"has {shape[3]} channels on its last axis (shape {shape}); "
                        f"{spec.channels} are needed{names}",
                    )
                )  # fmt: skip
                continue
            _check_intensities(vol, spec, problems, channel_axis=True)
        if ref is None:
            ref = vol
        else:
            _same_grid(vol, ref, problems, spec.channel(index) + " file")
    label_path = item.get("label")
    if label_path is not None:
        label = _read_volume(Path(label_path), problems, read_data)
        if label is not None:
            _check_label(label, spec, problems)
            if ref is not None:
                _same_grid(label, ref, problems, "label")
    return problems, len(paths) + (label_path is not None)


def _check_items(
    report: ValidationReport,
    items: Sequence[Any],
    check: Callable[[Any], tuple[list[Problem], int]],
    num_workers: int,
) -> None:
    """Run ``check`` on every item (in threads: decompression and decoding release the GIL), in item order."""
    workers = max(1, int(num_workers))
    if workers == 1 or len(items) < 2:
        results = [check(item) for item in items]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(check, items))
    for problems, count in results:
        report.problems.extend(problems)
        report.num_files += count


def validate_volume_items(
    report: ValidationReport,
    items: Sequence[Mapping[str, Any]],
    spec: VolumeSpec | Callable[[Mapping[str, Any]], VolumeSpec],
    read_data: bool = True,
    num_workers: int = 2,
) -> ValidationReport:
    """Check every item with :func:`check_volume_item`, adding the problems to ``report``.

    Args:
        report: report to add to.
        items: datalist items.
        spec: the spec, or a function giving each item's spec.
        read_data: read voxel data too.
        num_workers: threads.
    """
    spec_of = spec if callable(spec) else (lambda _: spec)
    _check_items(report, items, lambda item: check_volume_item(item, spec_of(item), read_data), num_workers)
    return report


def _unique_items(datalist: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    """Items of every list of a datalist, each image once (a labelled item wins over its image-only twin)."""
    seen: dict[str, Mapping[str, Any]] = {}
    for items in datalist.values():
        for item in items:
            key = json.dumps(item["image"])
            if key not in seen or ("label" in item and "label" not in seen[key]):
                seen[key] = item
    return list(seen.values())


# ---- data sets ----


def validate_btcv(
    dataset_dir: PathLike, datalist_file: PathLike | None = None, read_data: bool = True, num_workers: int = 2
) -> ValidationReport:
    """Check a BTCV folder (Synapse or tutorial layout; see :mod:`shared_networks.data.btcv`), or a datalist's files.

    Images must be 3-D CT volumes, labels 3-D maps of the values 0..13 on the image's grid.

    Args:
        dataset_dir: the BTCV folder.
        datalist_file: check the files of this datalist JSON instead of the folder's cases.
        read_data: read voxel data too (``False``: headers only).
        num_workers: threads reading files.
    """
    from shared_networks.data.btcv import BTCV_LABELS, btcv_datalist, find_btcv_cases

    read_data = as_bool(read_data, "read_data")

    root = Path(dataset_dir).expanduser().resolve()
    report = ValidationReport("BTCV", str(root))
    spec = VolumeSpec("BTCV", label_values=tuple(BTCV_LABELS))
    try:
        if datalist_file is not None:
            items = _unique_items(btcv_datalist(root, datalist_file=datalist_file))
        else:
            issues: list[tuple[str, Exception]] = []
            labelled, unlabelled = find_btcv_cases(root, issues)
            _collect(report, issues)
            items = labelled + unlabelled
    except (FileNotFoundError, ValueError) as err:
        report.error(datalist_file or root, str(err))
        return report
    return validate_volume_items(report, items, spec, read_data, num_workers)


def validate_brats(
    dataset_dir: PathLike, datalist_file: PathLike | None = None, read_data: bool = True, num_workers: int = 2
) -> ValidationReport:
    """Check an MSD Task01 or BraTS 2021 folder (see :mod:`shared_networks.data.brats`), or a datalist's files.

    MSD images must be 4-D with the 4 modalities on the last axis; BraTS 2021 cases 4 3-D modality files on one grid;
    labels 3-D maps of the layout's values (MSD 0-3, BraTS 2021 0, 1, 2, 4) on the image's grid.

    Args:
        dataset_dir: the data set folder.
        datalist_file: check the files of this datalist JSON instead of the folder's cases.
        read_data: read voxel data too (``False``: headers only).
        num_workers: threads reading files.
    """
    from shared_networks.data.brats import MODALITIES, brats_datalist, find_brats_cases
    from shared_networks.regions import LABEL_CONVENTIONS

    read_data = as_bool(read_data, "read_data")

    root = Path(dataset_dir).expanduser().resolve()
    report = ValidationReport("brain tumour", str(root))
    specs = {
        layout: VolumeSpec(f"{layout} brain tumour", len(MODALITIES), MODALITIES, convention.values)
        for layout, convention in LABEL_CONVENTIONS.items()
    }
    try:
        if datalist_file is not None:
            # headers are read below, every file, instead of stopping at the first bad one
            items = _unique_items(brats_datalist(root, datalist_file=datalist_file, check_headers=False))
        else:
            issues: list[tuple[str, Exception]] = []
            labelled, unlabelled, layout = find_brats_cases(root, issues, check_headers=False)
            _collect(report, issues)
            items = labelled + unlabelled
            report.dataset = {"msd": "MSD Task01", "brats2021": "BraTS 2021"}[layout]
    except (FileNotFoundError, ValueError) as err:
        report.error(datalist_file or root, str(err))
        return report
    return validate_volume_items(report, items, lambda item: specs[item.get("layout", "msd")], read_data, num_workers)


# ---- chest radiographs ----


def check_png(path: PathLike, read_data: bool = True) -> tuple[list[Problem], int]:
    """Check one radiograph: a readable, complete, single-frame grey or RGB(A) image that is not constant.

    Returns:
        ``(problems, 1)``.
    """
    from PIL import Image, UnidentifiedImageError

    from shared_networks.transforms import PIL_MODE_MAX

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


def validate_cxr14(
    dataset_dir: PathLike,
    missing: str = "error",
    labels_csv: PathLike | None = None,
    read_data: bool = True,
    num_workers: int = 2,
) -> ValidationReport:
    """Check a ChestX-ray14 folder in the NIH layout (see :mod:`shared_networks.data.cxr14`).

    The label file must parse (every bad row is reported), every image of ``train_val_list.txt`` and
    ``test_list.txt`` must have a label row and be on disk, and every listed image must be a readable single-frame
    grey or RGB(A) PNG that is not constant.

    Args:
        dataset_dir: the NIH folder.
        missing: listed images absent from disk are errors (``"error"``) or warnings (``"skip"``).
        labels_csv: label file (default: ``Data_Entry_2017_v2020.csv`` or ``Data_Entry_2017.csv``).
        read_data: decode every image too (``False``: headers only).
        num_workers: threads decoding images.
    """
    from shared_networks.data import cxr14

    read_data = as_bool(read_data, "read_data")
    root = Path(dataset_dir).expanduser().resolve()
    report = ValidationReport("ChestX-ray14", str(root))
    issues: list[tuple[str, Exception]] = []
    try:
        csv_path = cxr14.find_labels_csv(root, labels_csv)
        labels = cxr14.read_cxr14_labels(csv_path, issues)
        images = cxr14.find_cxr14_images(root)
    except (FileNotFoundError, ValueError) as err:
        report.error(root, str(err))
        return report
    _collect(report, issues)
    listed: list[str] = []
    for name in (cxr14.TRAIN_VAL_LIST, cxr14.TEST_LIST):
        try:
            listed += cxr14.read_split_list(root / name)
        except (FileNotFoundError, ValueError) as err:
            report.error(root / name, str(err))
    for name in listed:
        if name not in labels:
            report.error(root / "images" / name, f"listed in the split files but has no row in '{csv_path.name}'")
    present = []
    for name in dict.fromkeys(listed):
        if name in images:
            present.append(images[name])
        elif missing == "skip":
            report.warning(root / "images" / name, "listed in the split files but not on disk (left out)")
        else:
            report.error(root / "images" / name, "listed in the split files but not on disk")
    _check_items(report, present, lambda p: check_png(p, read_data), num_workers)
    return report


# ---- command line ----

_VALIDATORS: dict[str, Callable[..., ValidationReport]] = {
    "btcv": validate_btcv,
    "brats": validate_brats,
    "cxr14": validate_cxr14,
}


def _finish(report: ValidationReport, report_json: PathLike | None, max_shown: int) -> ValidationReport:
    print(report.format(max_shown))
    if report_json:
        report.write_json(report_json)
    if not report.ok:
        sys.exit(1)
    return report


class ValidationCommands:
    """Check a data set and report every problem (exit status 1 when there is an error, 0 otherwise).

    Each command reads every file (voxel data included: truncated .nii.gz files and NaN values show only there);
    give --read_data false to read headers only. --report_json FILE writes every problem as JSON.
    """

    def btcv(
        self,
        dataset_dir: str,
        datalist_file: str | None = None,
        read_data: bool = True,
        num_workers: int = 2,
        report_json: str | None = None,
        max_shown: int = 100,
    ) -> None:
        """Check a BTCV folder: the Synapse layout RawData/Training/img/img0001.nii.gz with
        RawData/Training/label/label0001.nii.gz (optional RawData/Testing/img/; the RawData/ prefix may be left out),
        or the tutorial layout imagesTr/img0001.nii.gz with labelsTr/label0001.nii.gz (optional imagesTs/).
        Images must be 3-D CTs, labels 3-D maps of 0..13 on the image's grid.

        Args:
            dataset_dir: the BTCV folder.
            datalist_file: check the files of this datalist JSON instead.
            read_data: read voxel data too.
            num_workers: threads reading files.
            report_json: also write the problems to this JSON file.
            max_shown: problems printed of each kind.
        """
        _finish(validate_btcv(dataset_dir, datalist_file, read_data, num_workers), report_json, max_shown)

    def brats(
        self,
        dataset_dir: str,
        datalist_file: str | None = None,
        read_data: bool = True,
        num_workers: int = 2,
        report_json: str | None = None,
        max_shown: int = 100,
    ) -> None:
        """Check an MSD Task01 folder (imagesTr/BRATS_001.nii.gz 4-D FLAIR, T1w, t1gd, T2w; labelsTr/; optional
        imagesTs/) or BraTS 2021 case folders (BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz).
        Labels must hold MSD 0-3 or BraTS 2021 0, 1, 2, 4 on the image's grid.

        Args:
            dataset_dir: the data set folder.
            datalist_file: check the files of this datalist JSON instead.
            read_data: read voxel data too.
            num_workers: threads reading files.
            report_json: also write the problems to this JSON file.
            max_shown: problems printed of each kind.
        """
        _finish(validate_brats(dataset_dir, datalist_file, read_data, num_workers), report_json, max_shown)

    def cxr14(
        self,
        dataset_dir: str,
        missing: str = "error",
        labels_csv: str | None = None,
        read_data: bool = True,
        num_workers: int = 2,
        report_json: str | None = None,
        max_shown: int = 100,
    ) -> None:
        """Check a ChestX-ray14 folder in the NIH layout: images/*.png (or images_001/images/ ...),
        Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv), train_val_list.txt and test_list.txt.

        Args:
            dataset_dir: the NIH folder.
            missing: "error" or "skip" (a warning) for listed images absent from disk.
            labels_csv: label file, default Data_Entry_2017_v2020.csv or Data_Entry_2017.csv.
            read_data: decode every image too.
            num_workers: threads decoding images.
            report_json: also write the problems to this JSON file.
            max_shown: problems printed of each kind.
        """
        report = validate_cxr14(dataset_dir, missing, labels_csv, read_data, num_workers)
        _finish(report, report_json, max_shown)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared_networks.validation btcv|brats|cxr14 --dataset_dir DIR``.

    Args:
        argv: command line arguments; ``None`` reads ``sys.argv``.
    """
    from shared_networks.cli import run_fire

    run_fire(ValidationCommands, "shared_networks.validation", argv)


if __name__ == "__main__":
    main()
