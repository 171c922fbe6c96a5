"""The check a training workflow runs on its inputs before the first epoch: the data-set checker on the split it reads.

Every training workflow (``pretrain.yaml``, ``train.yaml``) calls :func:`check_split` in its ``initialize`` section on
exactly the datalist items it will load (the training items, and the validation items of fine-tuning), whether they
come from ``dataset_dir``'s split, a ``datalist_file`` or MONAI Label's datastore. A corrupt, truncated or mismatched
file then stops the run at once, with every problem named by file, instead of an error in some later epoch.
``--check_data false`` skips the check. A chest X-ray workflow that reads a prepared store (``prepared_dir``) checks
the files' headers only (:func:`pixels_checked`): the store's writer decoded every image, and each file's size and
modification time are compared with the store's index before training.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from shared_networks.data.brats import MODALITIES
from shared_networks.data.btcv import BTCV_LABELS
from shared_networks.data.regions import LABEL_CONVENTIONS
from shared_networks.utils.flags import as_bool
from shared_networks.validation.images import MAX_PIXELS, check_png
from shared_networks.validation.problems import (
    ERROR,
    DatasetError,
    Problem,
    ValidationReport,
    check_items,
    require_valid,
)
from shared_networks.validation.volumes import MAX_VOXELS, VolumeSpec, validate_volume_items

__all__ = ["SPLIT_KINDS", "check_split", "pixels_checked"]

SPLIT_KINDS: tuple[str, ...] = ("btcv", "brats", "cxr14")
_NAMES = {"btcv": "BTCV", "brats": "brain tumour", "cxr14": "ChestX-ray14"}
_SKIP = "--check_data false skips this check"


def pixels_checked(prepared_dir: Any = None) -> bool:
    """Whether a workflow's :func:`check_split` decodes its images (``read_data``): yes, unless they come from a
    prepared store (``prepared_dir`` set), whose writer decoded every one; a full-size NIH split decodes at about
    140 images/s a core (``benchmarks/README.md``, "Full-size data"), minutes before every run's first epoch."""
    return prepared_dir is None or (isinstance(prepared_dir, str) and prepared_dir.strip().lower() in ("", "none"))


def _files(item: Any) -> list[str]:
    if not isinstance(item, Mapping):
        return []
    image = item.get("image")
    files = list(image) if isinstance(image, (list, tuple)) else [image] if image is not None else []
    label = item.get("label")
    if isinstance(label, (str, os.PathLike)):
        files.append(label)
    return [str(f) for f in files]


def _common_folder(items: Sequence[Any]) -> str:
    files = [os.path.abspath(f) for item in items for f in _files(item)]
    try:
        return os.path.dirname(os.path.commonpath(files)) if len(files) == 1 else os.path.commonpath(files)
    except ValueError:  # no file, or files on different drives
        return ""


def _malformed(items: Sequence[Any], report: ValidationReport) -> list[Any]:
    """Items without an ``image`` are reported; the others are returned."""
    good = []
    for index, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("image") not in (None, "", [], ()):
            good.append(item)
        else:
            report.problems.append(Problem(ERROR, f"item {index}", f"datalist item without an 'image': {item!r}"))
    return good


def check_split(
    items: Sequence[Mapping[str, Any]] | None,
    kind: str,
    enabled: Any = True,
    read_data: Any = True,
    num_workers: int = 2,
    max_voxels: int = MAX_VOXELS,
    max_pixels: int = MAX_PIXELS,
) -> ValidationReport | None:
    """Check exactly the given datalist items with the per-item checks of ``kind``'s data-set checker.

    * ``btcv``: each item's NIfTI image (a 3-D CT) and label (3-D, values 0..13, on the image's grid);
    * ``brats``: MSD Task01 items (one 4-D image, 4 modalities on the last axis) or BraTS 2021 items (4 3-D modality
      files on one grid), by the item's ``layout`` key (no key: MSD, as MONAI Label's datastore items
      ``{image, label}``); labels of the layout's values on the image's grid;
    * ``cxr14``: each item's radiograph (a readable, single-frame, grey or RGB(A) image that is not constant).

    Args:
        items: the datalist items the workflow reads (``None`` or empty: nothing to check).
        kind: ``"btcv"``, ``"brats"`` or ``"cxr14"``.
        enabled: run the check (parsed with :func:`~shared_networks.utils.flags.as_bool`); ``False`` returns ``None``
            at once.
        read_data: read the voxels/pixels too (``False``: headers only).
        num_workers: threads reading files.
        max_voxels: NIfTI files whose header declares more voxels are reported, not read.
        max_pixels: images whose header declares more pixels are reported, not decoded.

    Returns:
        The report (warnings only), or ``None`` when disabled.

    Raises:
        DatasetError: the full report, every problem by file, when there is an error.
        ValueError: for an unknown ``kind`` or a flag that is not true/false.
    """
    if not as_bool(enabled, "check_data"):
        return None
    read_data = as_bool(read_data, "read_data")
    if kind not in SPLIT_KINDS:
        raise ValueError(f"kind must be one of {list(SPLIT_KINDS)}, got {kind!r}.")
    items = list(items or [])
    unique = list({repr(_files(item)) if _files(item) else repr(item): item for item in items}.values())
    report = ValidationReport(f"{_NAMES[kind]} split", _common_folder(unique))
    unique = _malformed(unique, report)
    if kind == "btcv":
        validate_volume_items(
            report,
            unique,
            VolumeSpec("BTCV", label_values=tuple(BTCV_LABELS)),
            read_data,
            num_workers,
            None,
            max_voxels,
        )
    elif kind == "brats":
        specs = {
            layout: VolumeSpec(f"{layout} brain tumour", len(MODALITIES), MODALITIES, convention.values)
            for layout, convention in LABEL_CONVENTIONS.items()
        }

        def spec_of(item: Mapping[str, Any]) -> VolumeSpec:
            layout = item.get("layout") or "msd"
            if layout not in specs:
                raise ValueError(f"unknown layout {layout!r}; expected one of {sorted(specs)}")
            return specs[layout]

        validate_volume_items(report, unique, spec_of, read_data, num_workers, None, max_voxels)
    else:
        check_items(report, unique, lambda item: check_png(item["image"], read_data, None, max_pixels), num_workers)
    try:
        require_valid(report)
    except DatasetError as err:
        raise DatasetError(f"{err}\nThe workflow stops before training ({_SKIP}).") from None
    return report
