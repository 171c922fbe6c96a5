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
* NaN or infinite intensities as the loaders read them (``scl_slope``/``scl_inter`` applied, cast to float32: an int16
  CT whose slope overflows float32 is named), complex or RGB voxel types, empty images and constant images (or
  constant modalities);
* a FIFO, folder, device or broken link standing in for an image (named, never opened), and content that is not the
  format of the file's name (JPEG bytes in a ``.png``, text in a ``.nii.gz``);
* split lists: an empty ``training``/``validation`` list of BTCV's ``dataset_0.json`` (or ``training`` of MSD's
  ``dataset.json``), an empty ``train_val_list.txt``/``test_list.txt``, an image in two lists, a patient in both
  ChestX-ray14 lists, and a split file entry that leads outside the data set folder (``..``, an absolute path, a
  symbolic link);
* warnings, not errors: a label map with no foreground voxel.

Command line (prints the report, exits with status 1 when there is an error)::

    python -m shared_networks.cli.validate btcv --dataset_dir DIR
    python -m shared_networks.cli.validate brats --dataset_dir DIR
    python -m shared_networks.cli.validate cxr14 --dataset_dir DIR

The data-preparation commands (``python -m shared_networks.cli.prepare btcv`` etc.) run the same checks and refuse to
write a datalist from a data set with errors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_networks.data import cxr14
from shared_networks.data.brats import MODALITIES, brats_datalist, find_brats_cases
from shared_networks.data.btcv import BTCV_LABELS, DATASET_JSON_NAME, btcv_datalist, dataset_json_lists, find_btcv_cases
from shared_networks.data.files import NIFTI_SUFFIXES, Issues, read_json_object, split_file_lists
from shared_networks.data.regions import LABEL_CONVENTIONS
from shared_networks.utils.flags import as_bool
from shared_networks.validation.filetypes import MISSING, file_problem, nonregular_entries
from shared_networks.validation.images import MAX_PIXELS, check_png
from shared_networks.validation.problems import ValidationReport, check_items, collect, outside_link
from shared_networks.validation.volumes import MAX_VOXELS, VolumeSpec, validate_volume_items

__all__ = ["validate_brats", "validate_btcv", "validate_cxr14"]

PathLike = str | os.PathLike[str]


def _unique_items(*groups: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Items of every group, each image and label pair once (a labelled item wins over its image-only twin)."""
    seen: dict[tuple[str, str | None], Mapping[str, Any]] = {}
    for items in groups:
        for item in items:
            seen.setdefault((json.dumps(item["image"]), item.get("label")), item)
    labelled = {image for image, label in seen if label is not None}
    return [item for (image, label), item in seen.items() if label is not None or image not in labelled]


def _nonregular(report: ValidationReport, root: Path, items: Sequence[Mapping[str, Any]]) -> None:
    """Report the FIFOs, folders, devices and broken links named like NIfTI files in the data set folder: the case
    listing passes over them, so without this only a missing partner would show. Files of ``items`` are left to
    their own check."""
    checked = set()
    for item in items:
        image = item["image"]
        checked.update(map(str, image) if isinstance(image, (list, tuple)) else [str(image)])
        checked.add(str(item.get("label")))
    for path, problem in nonregular_entries(root, NIFTI_SUFFIXES).items():
        if str(path) not in checked:
            report.error(path, problem)


def _missing_root(report: ValidationReport, root: Path) -> bool:
    """Report a data set folder that does not exist (or is not a folder) as one problem; ``True`` when so."""
    if root.is_dir():
        return False
    what = "does not exist" if not root.exists() else "is not a folder"
    report.error(root, f"the data set folder '{root}' {what}")
    return True


def _check_msd_json(report: ValidationReport, root: Path) -> None:
    """An MSD ``dataset.json``: its file lists (inside the folder, no image in two lists, a ``training`` list, when
    there, not empty; :func:`~shared_networks.data.files.split_file_lists`) and its ``modality`` against the channel
    order the bundle assumes (:data:`MODALITIES`). The datalist is built from the folder, not from these lists."""
    path = root / "dataset.json"
    content = _check_json(report, path, root, "MSD dataset.json")
    if content is None:
        return
    issues: Issues = []
    split_file_lists(path, content, root, ("training",), ("test",), [k for k in ("training",) if k in content], issues)
    collect(report, issues)
    modality = content.get("modality")
    if modality is None:
        return
    if not isinstance(modality, Mapping):
        report.error(path, f"'modality' must map channel numbers to names, got {modality!r}")
        return
    try:
        declared = [str(modality[k]) for k in sorted(modality, key=int)]
    except (TypeError, ValueError):
        report.error(path, f"'modality' keys must be channel numbers, got {sorted(map(str, modality))}")
        return
    if [m.lower() for m in declared] != [m.lower() for m in MODALITIES]:
        report.error(
            path,
            f"declares the channels {declared} ('modality'), but the bundle reads them as {list(MODALITIES)}: "
            "reorder the image channels (or the data set is not MSD Task01)",
        )


def _unusable(report: ValidationReport, path: Path, root: Path) -> bool:
    """Report a text file of the data set (split file, label file) that is a link out of the folder or not a regular
    file (a FIFO would block its reader forever); ``True`` when so. A missing file is left to its reader's message."""
    link = outside_link(path, root)
    problem = file_problem(path) if link is None else None
    if link is not None:
        report.problems.append(link)
    elif problem is not None and problem != MISSING:
        report.error(path, problem)
    else:
        return False
    return True


def _check_json(report: ValidationReport, path: Path, root: Path, what: str) -> Mapping | None:
    """A JSON file of the data set (when present): inside the folder, a regular file, UTF-8, one JSON object; its
    content, or None when it is absent or has a problem (reported)."""
    if not os.path.lexists(path):
        return None
    if _unusable(report, path, root):
        return None
    try:
        return read_json_object(path, what)
    except (OSError, ValueError) as err:
        report.error(path, str(err))
        return None


def validate_btcv(
    dataset_dir: PathLike,
    datalist_file: PathLike | None = None,
    read_data: bool = True,
    num_workers: int = 2,
    max_voxels: int = MAX_VOXELS,
) -> ValidationReport:
    """Check a BTCV folder (Synapse or tutorial layout; see :mod:`shared_networks.data.btcv`), or a datalist's files.

    Images must be 3-D CT volumes, labels 3-D maps of the values 0..13 on the image's grid.

    Args:
        dataset_dir: the BTCV folder.
        datalist_file: check the files of this datalist JSON instead of the folder's cases.
        read_data: read voxel data too (``False``: headers only).
        num_workers: threads reading files.
        max_voxels: files whose header declares more voxels are reported, not read.
    """
    read_data = as_bool(read_data, "read_data")

    root = Path(dataset_dir).expanduser().resolve()
    report = ValidationReport("BTCV", str(root))
    spec = VolumeSpec("BTCV", label_values=tuple(BTCV_LABELS))
    if _missing_root(report, root):
        return report
    content = _check_json(report, root / DATASET_JSON_NAME, root, "BTCV split file")
    try:
        if datalist_file is not None:
            # every listed file is checked, the pretrain list's extra images too
            datalist = btcv_datalist(root, datalist_file=datalist_file, pretrain_extra_images=True, check_files=False)
            items = _unique_items(*datalist.values())
        else:
            issues: Issues = []
            labelled, unlabelled = find_btcv_cases(root, issues)
            split = _btcv_split_items(report, root, content, issues)
            collect(report, issues)
            items = _unique_items(labelled, unlabelled, split)
            _nonregular(report, root, items)
    except (OSError, ValueError) as err:
        report.error(datalist_file or root, str(err))
        return report
    return validate_volume_items(report, items, spec, read_data, num_workers, root, max_voxels)


def _btcv_split_items(
    report: ValidationReport, root: Path, content: Mapping[str, Any] | None, issues: Issues
) -> list[Mapping[str, Any]]:
    """The files ``dataset_0.json`` names (what ``--split dataset_json`` puts in the datalist), to be checked with the
    folder's cases; its list problems go to ``issues``. A ``test`` image that is absent is a warning: the datalist
    leaves it out."""
    if content is None:
        return []
    lists = dataset_json_lists(root, content, issues)
    present = []
    for item in lists["test"]:
        if os.path.lexists(item["image"]):
            present.append(item)
        else:
            report.warning(
                item["image"],
                f"listed in the 'test' list of '{root / DATASET_JSON_NAME}' but not on disk (left out of the datalist)",
            )
    return lists["training"] + lists["validation"] + present


def validate_brats(
    dataset_dir: PathLike,
    datalist_file: PathLike | None = None,
    read_data: bool = True,
    num_workers: int = 2,
    max_voxels: int = MAX_VOXELS,
) -> ValidationReport:
    """Check an MSD Task01 or BraTS 2021 folder (see :mod:`shared_networks.data.brats`), or a datalist's files.

    MSD images must be 4-D with the 4 modalities on the last axis; BraTS 2021 cases 4 3-D modality files on one grid;
    labels 3-D maps of the layout's values (MSD 0-3, BraTS 2021 0, 1, 2, 4) on the image's grid.

    Args:
        dataset_dir: the data set folder.
        datalist_file: check the files of this datalist JSON instead of the folder's cases.
        read_data: read voxel data too (``False``: headers only).
        num_workers: threads reading files.
        max_voxels: files whose header declares more voxels are reported, not read.
    """
    read_data = as_bool(read_data, "read_data")

    root = Path(dataset_dir).expanduser().resolve()
    report = ValidationReport("brain tumour", str(root))
    specs = {
        layout: VolumeSpec(f"{layout} brain tumour", len(MODALITIES), MODALITIES, convention.values)
        for layout, convention in LABEL_CONVENTIONS.items()
    }
    if _missing_root(report, root):
        return report
    try:
        if datalist_file is not None:
            # headers are read below, every file, instead of stopping at the first bad one
            datalist = brats_datalist(
                root, datalist_file=datalist_file, check_headers=False, pretrain_extra_images=True
            )
            items = _unique_items(*datalist.values())
        else:
            issues: Issues = []
            labelled, unlabelled, layout = find_brats_cases(root, issues, check_headers=False)
            collect(report, issues)
            items = labelled + unlabelled
            report.dataset = {"msd": "MSD Task01", "brats2021": "BraTS 2021"}[layout]
            if layout == "msd":
                _check_msd_json(report, root)
            _nonregular(report, root, items)
    except (OSError, ValueError) as err:
        report.error(datalist_file or root, str(err))
        return report
    return validate_volume_items(
        report, items, lambda item: specs[item.get("layout", "msd")], read_data, num_workers, root, max_voxels
    )


def _cxr14_labels(
    report: ValidationReport, root: Path, labels_csv: PathLike | None
) -> tuple[dict[str, Any] | None, Path | None]:
    """``(labels, csv_path)``: the rows of the ChestX-ray14 label file (``None`` when it cannot be read) and its path
    (``None`` when there is none); every problem (each bad row too) reported."""
    issues: list[tuple[str, Exception]] = []
    labels: dict[str, Any] | None = None
    csv_path: Path | None = None
    try:
        csv_path = cxr14.find_labels_csv(root, labels_csv)
    except (OSError, ValueError) as err:
        report.error(root, str(err))
    if csv_path is not None and not _unusable(report, csv_path, root):
        try:
            labels = cxr14.read_cxr14_labels(csv_path, issues)
        except (OSError, ValueError) as err:
            report.error(csv_path, str(err))
    collect(report, issues)
    return labels, csv_path


def _cxr14_split_lists(report: ValidationReport, root: Path) -> dict[str, list[str] | None]:
    """The image names of ``train_val_list.txt`` and ``test_list.txt`` by file name (``None`` for a file that cannot
    be read, the problem reported)."""
    split: dict[str, list[str] | None] = dict.fromkeys((cxr14.TRAIN_VAL_LIST, cxr14.TEST_LIST))
    for name in split:
        if _unusable(report, root / name, root):
            continue
        try:
            split[name] = cxr14.read_split_list(root / name)
        except (OSError, ValueError) as err:
            report.error(root / name, str(err))
    return split


def _cxr14_listed_images(
    report: ValidationReport, root: Path, listed: Sequence[str], images: Mapping[str, Path], missing: str
) -> list[Path]:
    """The files of the ``listed`` images that are on disk. A listed image that is not: a FIFO, folder or device in
    its place is an error naming it; otherwise a warning with ``missing="skip"``, else an error (when the folder
    holds images at all)."""
    absent = [name for name in dict.fromkeys(listed) if name not in images]
    scanned = nonregular_entries(root, (".png",), 3) if absent else {}  # images/, images_*/images/
    nonregular = {path.name: (path, problem) for path, problem in scanned.items()}
    present = []
    for name in dict.fromkeys(listed):
        if name in images:
            present.append(images[name])
        elif name in nonregular:  # a FIFO, folder or device in place of the image: named, not "missing"
            report.error(*nonregular[name])
        elif missing == "skip":
            report.warning(root / "images" / name, "listed in the split files but not on disk (left out)")
        elif images:
            report.error(root / "images" / name, "listed in the split files but not on disk")
    return present


def validate_cxr14(
    dataset_dir: PathLike,
    missing: str = "error",
    labels_csv: PathLike | None = None,
    read_data: bool = True,
    num_workers: int = 2,
    max_pixels: int = MAX_PIXELS,
) -> ValidationReport:
    """Check a ChestX-ray14 folder in the NIH layout (see :mod:`shared_networks.data.cxr14`).

    The label file must parse (every bad row is reported, a blank Patient ID included), ``train_val_list.txt`` and
    ``test_list.txt`` must each list an image, share no image and no patient, every image they list must have a label
    row and be on disk, and every listed image must be a regular file holding a readable single-frame grey or RGB(A)
    PNG that is not constant. Text files must be UTF-8 (a byte-order mark is accepted). A problem of one file (a bad
    CSV header, an unreadable list) never hides those of the others.

    Args:
        dataset_dir: the NIH folder.
        missing: listed images absent from disk are errors (``"error"``) or warnings (``"skip"``).
        labels_csv: label file (default: ``Data_Entry_2017_v2020.csv`` or ``Data_Entry_2017.csv``).
        read_data: decode every image too (``False``: headers only).
        num_workers: threads decoding images.
        max_pixels: images whose header declares more pixels are reported, not decoded.
    """
    read_data = as_bool(read_data, "read_data")
    root = Path(dataset_dir).expanduser().resolve()
    report = ValidationReport("ChestX-ray14", str(root))
    if _missing_root(report, root):
        return report
    if missing not in cxr14.MISSING_POLICIES:
        report.error(root, f"missing must be one of {list(cxr14.MISSING_POLICIES)}, got {missing!r}")
        return report
    labels, csv_path = _cxr14_labels(report, root, labels_csv)
    try:
        images = cxr14.find_cxr14_images(root)
    except (OSError, ValueError) as err:
        report.error(root, str(err))
        images = {}
    split = _cxr14_split_lists(report, root)
    issues: list[tuple[str, Exception]] = []
    cxr14.check_split_files(root, split[cxr14.TRAIN_VAL_LIST], split[cxr14.TEST_LIST], labels, issues)
    collect(report, issues)
    listed = [name for names in split.values() for name in names or []]
    if labels is not None and csv_path is not None:
        for name in listed:
            if name not in labels:
                report.error(root / "images" / name, f"listed in the split files but has no row in '{csv_path.name}'")
    present = _cxr14_listed_images(report, root, listed, images, missing)
    check_items(report, present, lambda p: check_png(p, read_data, root, max_pixels), num_workers)
    return report
