"""Where the brain tumour files are: the MSD Task01 and BraTS 2021 layouts, their cases and header checks.

* MSD ``Task01_BrainTumour``: ``imagesTr/BRATS_001.nii.gz`` (4-D, channels FLAIR, T1w, t1gd, T2w),
  ``labelsTr/BRATS_001.nii.gz``, unlabelled ``imagesTs/``.
* BraTS 2021 case folders, directly under the data set folder or one level deeper:
  ``BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz`` (no ``seg``: unlabelled).

:func:`find_brats_cases` lists the cases of a folder, :func:`check_case` checks an item's headers (nibabel reads only
the header), :func:`brats_inference_inputs` lists the cases to segment and :func:`case_name_formatter` names the
outputs after them. The datalists built from the cases: :mod:`shared_networks.data.brats`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from shared_networks.data.files import Issues, is_nifti, nifti_stem, raise_or_collect
from shared_networks.utils.paths import as_dir

__all__ = [
    "BRATS2021_LABEL_SUFFIX",
    "BRATS2021_SUFFIXES",
    "LAYOUTS",
    "LAYOUT_HELP",
    "MODALITIES",
    "brats_inference_inputs",
    "case_name_formatter",
    "check_case",
    "find_brats_cases",
]

logger = logging.getLogger("shared_networks.data.brats")  # logs under the datalist module's name

MODALITIES: tuple[str, ...] = ("FLAIR", "T1w", "T1gd", "T2w")
"""Channel order of every image, whatever the layout (the MSD Task01 order)."""

BRATS2021_SUFFIXES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
"""BraTS 2021 file suffixes of the modalities, in :data:`MODALITIES` order."""

BRATS2021_LABEL_SUFFIX = "seg"
LAYOUTS: tuple[str, ...] = ("msd", "brats2021")

_BRATS2021_FILE = re.compile(r"^(?P<case>.+)_(?P<suffix>flair|t1|t1ce|t2|seg)\.nii(\.gz)?$")
LAYOUT_HELP = (
    "Expected the MSD Task01 layout (imagesTr/BRATS_001.nii.gz as 4-D FLAIR, T1w, t1gd, T2w; labelsTr/BRATS_001.nii.gz;"
    " optional unlabelled imagesTs/) or BraTS 2021 case folders (BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}"
    ".nii.gz, seg optional), directly under the folder or in one release sub-folder."
)

PathLike = str | os.PathLike[str]
Item = dict[str, Any]


# ---- headers ----


def _header(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of a NIfTI file, from its header only.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if nibabel cannot read it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"image file '{path}' does not exist.")
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises several types for unreadable files
        raise ValueError(f"'{path}' is not a readable NIfTI file: {err}") from err
    return tuple(int(s) for s in img.shape), np.asarray(img.affine)


def _check_same_grid(
    path: Path,
    shape: tuple[int, ...],
    affine: np.ndarray,
    ref: Path,
    ref_shape: tuple[int, ...],
    ref_affine: np.ndarray,
) -> None:
    """Raise ``ValueError`` naming ``path`` when its spatial grid differs from the reference file's."""
    if shape[:3] != ref_shape[:3]:
        raise ValueError(f"'{path}' has spatial shape {shape[:3]} but '{ref}' has {ref_shape[:3]}; they must match.")
    if not np.allclose(affine, ref_affine):  # the tolerance of MONAI's channel stacking
        raise ValueError(
            f"'{path}' has affine {affine.tolist()} but '{ref}' has {ref_affine.tolist()}; they must be on one grid."
        )


def check_case(item: Mapping[str, Any]) -> None:
    """Check an item's files from their headers: 4 modalities on one grid, and the label on that grid.

    An MSD image must be 4-D with 4 channels on its last axis; BraTS 2021 modalities must be 4 3-D files of one
    shape and affine. A label must be 3-D on the image's grid.

    Args:
        item: datalist item with ``image`` (a path, or the list of 4 modality paths) and optionally ``label``.

    Raises:
        ValueError: naming the offending file.
        FileNotFoundError: if a file is missing.
    """
    image = item["image"]
    if isinstance(image, (str, os.PathLike)):
        ref = Path(image)
        ref_shape, ref_affine = _header(ref)
        if len(ref_shape) != 4 or ref_shape[3] != len(MODALITIES):
            raise ValueError(
                f"'{ref}' has shape {ref_shape}: an MSD Task01 image must be 4-D with {len(MODALITIES)} channels "
                f"({', '.join(MODALITIES)}) on its last axis."
            )
    else:
        paths = [Path(p) for p in image]
        if len(paths) != len(MODALITIES):
            raise ValueError(
                f"an image of {len(paths)} files ({', '.join(map(str, paths))}) was given; {len(MODALITIES)} are "
                f"needed ({', '.join(MODALITIES)})."
            )
        ref = paths[0]
        ref_shape, ref_affine = _header(ref)
        for path in paths:
            shape, affine = (ref_shape, ref_affine) if path == ref else _header(path)
            if len(shape) != 3:
                raise ValueError(f"'{path}' has shape {shape}: each BraTS modality file must be 3-D.")
            _check_same_grid(path, shape, affine, ref, ref_shape, ref_affine)
    if item.get("label") is not None:
        label = Path(item["label"])
        shape, affine = _header(label)
        if len(shape) != 3:
            raise ValueError(f"label '{label}' has shape {shape}; a label map must be 3-D.")
        _check_same_grid(label, shape, affine, ref, ref_shape, ref_affine)


# ---- layouts ----


def _brats2021_case(folder: Path, issues: Issues | None = None) -> Item | None:
    """The item of a BraTS 2021 case folder, or None when the folder holds no BraTS 2021 file (or, collecting
    ``issues``, when it is incomplete).

    Raises:
        ValueError: if the folder mixes cases or lacks a modality (the message names the missing file).
    """
    found: dict[str, Path] = {}
    cases: set[str] = set()
    for path in sorted(folder.iterdir()):
        match = _BRATS2021_FILE.match(path.name) if is_nifti(path) else None
        if match:
            cases.add(match["case"])
            found[match["suffix"]] = path
    if not found:
        return None
    if len(cases) > 1:
        error = ValueError(f"BraTS case folder '{folder}' holds files of several cases {sorted(cases)}; keep one.")
        raise_or_collect(issues, folder, error)
        return None
    case = cases.pop()
    missing = [f"{case}_{s}.nii.gz" for s in BRATS2021_SUFFIXES if s not in found]
    if missing:
        raise_or_collect(
            issues,
            folder / missing[0],
            ValueError(
                f"BraTS case folder '{folder}' lacks {', '.join(missing)}: the 4 modalities "
                f"({', '.join(BRATS2021_SUFFIXES)}) are all needed."
            ),
        )
        return None
    item: Item = {"image": [str(found[s]) for s in BRATS2021_SUFFIXES], "case": case, "layout": "brats2021"}
    if BRATS2021_LABEL_SUFFIX in found:
        item["label"] = str(found[BRATS2021_LABEL_SUFFIX])
    return item


def _brats2021_cases(root: Path, issues: Issues | None = None) -> list[Item]:
    """Case items of the BraTS 2021 folders directly under ``root``, else under its one release sub-folder."""
    for base in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        folders = [p for p in sorted(base.iterdir()) if p.is_dir()]
        if not any(_BRATS2021_FILE.match(f.name) for d in folders for f in d.iterdir()):
            continue
        return [c for c in (_brats2021_case(p, issues) for p in folders) if c is not None]
    return []


def _msd_cases(root: Path, issues: Issues | None = None) -> tuple[list[Item], list[Item]]:
    """Labelled and unlabelled items of the MSD Task01 layout (images and labels paired by file name).

    Raises:
        FileNotFoundError: if ``imagesTr`` holds images but ``labelsTr`` is missing.
        ValueError: if an image has no label or a label no image.
    """
    images_tr, labels_tr = root / "imagesTr", root / "labelsTr"
    images = {p.name: p for p in sorted(images_tr.iterdir()) if is_nifti(p)} if images_tr.is_dir() else {}
    labels = {p.name: p for p in sorted(labels_tr.iterdir()) if is_nifti(p)} if labels_tr.is_dir() else {}
    if images and not labels_tr.is_dir():
        error = FileNotFoundError(f"label folder '{labels_tr}' is missing for the images in '{images_tr}'.")
        raise_or_collect(issues, labels_tr, error)
    for name, path in images.items():
        if name not in labels and labels_tr.is_dir():
            raise_or_collect(issues, path, ValueError(f"image '{path}' has no label: expected '{labels_tr / name}'."))
    for name, path in labels.items():
        if name not in images:
            raise_or_collect(issues, path, ValueError(f"label '{path}' has no image: expected '{images_tr / name}'."))
    labelled = [
        {"image": str(images[n]), "label": str(labels[n]), "case": nifti_stem(n), "layout": "msd"}
        for n in sorted(set(images) & set(labels))
    ]
    images_ts = root / "imagesTs"
    unlabelled = (
        [{"image": str(p), "case": nifti_stem(p), "layout": "msd"} for p in sorted(images_ts.iterdir()) if is_nifti(p)]
        if images_ts.is_dir()
        else []
    )
    return labelled, unlabelled


def find_brats_cases(
    dataset_dir: PathLike, issues: Issues | None = None, check_headers: bool = True
) -> tuple[list[Item], list[Item], str]:
    """Find the labelled and unlabelled cases of an MSD Task01 or BraTS 2021 folder, and check their headers.

    Args:
        dataset_dir: folder of either layout (MSD is used when ``imagesTr`` or ``imagesTs`` exists).
        issues: ``None`` to raise at the first unpaired file or incomplete case; a list to append every such problem
            to as ``(path, exception)`` and return the cases that are fine (:mod:`shared_networks.validation`).
        check_headers: check each case's headers with :func:`check_case` (raising at the first bad one).

    Returns:
        ``(labelled, unlabelled, layout)``: labelled items ``{"image", "label", "case", "layout"}`` and unlabelled
        items ``{"image", "case", "layout"}`` with absolute paths, sorted by case; ``layout`` is ``"msd"`` or
        ``"brats2021"``. ``image`` is one 4-D file (MSD) or the list of the 4 modality files (BraTS 2021).

    Raises:
        FileNotFoundError: if the folder does not exist or holds no case of either layout.
        ValueError: unpaired MSD files, an incomplete BraTS case folder, or headers that do not fit (naming the file).
    """
    root = as_dir(dataset_dir, "brain tumour dataset folder", LAYOUT_HELP)
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        layout = "msd"
        labelled, unlabelled = _msd_cases(root, issues)
    else:
        layout = "brats2021"
        cases = _brats2021_cases(root, issues)
        labelled = [c for c in cases if "label" in c]
        unlabelled = [c for c in cases if "label" not in c]
    if not labelled and not unlabelled and not issues:
        raise FileNotFoundError(f"no brain tumour case found in '{root}'. {LAYOUT_HELP}")
    if check_headers:
        for item in labelled + unlabelled:
            check_case(item)
    logger.info("%s layout in '%s': %d labelled, %d unlabelled cases.", layout, root, len(labelled), len(unlabelled))
    return labelled, unlabelled, layout


# ---- inference ----


def brats_inference_inputs(path: PathLike) -> list[Item]:
    """The cases to segment under ``path``, each checked from its headers.

    ``path`` may be an MSD 4-D NIfTI file, a BraTS 2021 case folder (the 4 modality files; a ``seg`` file there is
    ignored), or a folder holding either kind (one level, e.g. MSD ``imagesTs/`` or a BraTS release folder).

    Returns:
        Items ``{"image", "case", "layout"}``: ``layout`` decides the label numbering of the written label map.

    Raises:
        FileNotFoundError: if ``path`` does not exist or holds no case.
        ValueError: a file that is not NIfTI, an incomplete case folder, or headers that do not fit (naming the file).
    """
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise FileNotFoundError(f"inference input '{p}' does not exist.")
    if p.is_file():
        if not is_nifti(p):
            raise ValueError(f"inference input '{p}' is not a NIfTI file (.nii or .nii.gz).")
        items: list[Item] = [{"image": str(p), "case": nifti_stem(p), "layout": "msd"}]
    elif (case := _brats2021_case(p)) is not None:
        items = [case]
    else:
        items = [{"image": str(c), "case": nifti_stem(c), "layout": "msd"} for c in sorted(p.iterdir()) if is_nifti(c)]
        items += [c for c in (_brats2021_case(d) for d in sorted(p.iterdir()) if d.is_dir()) if c is not None]
    if not items:
        raise FileNotFoundError(
            f"no case found in '{p}': expected MSD 4-D NIfTI files or BraTS 2021 case folders "
            "(<case>_{flair,t1,t1ce,t2}.nii.gz)."
        )
    for item in items:
        item.pop("label", None)
        check_case(item)
    return items


def case_name_formatter(metadict: Mapping[str, Any] | None, saver: Any) -> dict[str, Any]:
    """``SaveImaged(output_name_formatter=...)``: name outputs after the case, not the first modality file.

    ``BraTS2021_00000_flair.nii.gz`` -> ``BraTS2021_00000``; other names lose only their extension
    (``BRATS_001.nii.gz`` -> ``BRATS_001``).
    """
    from monai.data.folder_layout import default_name_formatter

    names = default_name_formatter(metadict, saver)
    subject = nifti_stem(names["subject"])
    match = _BRATS2021_FILE.match(f"{subject}.nii.gz")
    names["subject"] = match["case"] if match else subject
    return names
