"""Where the BTCV files are: the two public layouts under a ``dataset_dir``, their cases paired by case number.

* the Synapse download (``RawData.zip``)::

      RawData/Training/img/img0001.nii.gz      RawData/Training/label/label0001.nii.gz
      RawData/Testing/img/img0061.nii.gz       (unlabelled)

  The same tree without the ``RawData/`` prefix (``Training/img``, ``Training/label``, ``Testing/img``) is accepted.

* the tutorial layout used by the UNETR / Swin-UNETR MONAI tutorials::

      imagesTr/img0001.nii.gz   labelsTr/label0001.nii.gz
      imagesTs/img0061.nii.gz   (optional, unlabelled)
      dataset_0.json            (optional; its ``training``/``validation`` lists are a pre-made split)

Images and labels are paired by the case number (the digits in the file name), never by sorted order
(:func:`find_btcv_cases`); :func:`dataset_json_lists` reads the tutorial's ``dataset_0.json``. The datalist built from
them: :mod:`shared_networks.data.btcv`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_networks.data.files import (
    Issues,
    is_nifti,
    nifti_stem,
    raise_or_collect,
    read_json_object,
    split_file_lists,
)
from shared_networks.utils.paths import as_dir

__all__ = ["DATASET_JSON_NAME", "LAYOUT_HELP", "NIFTI_SUFFIXES", "case_number", "dataset_json_lists", "find_btcv_cases"]

logger = logging.getLogger("shared_networks.data.btcv")  # logs under the datalist module's name

DATASET_JSON_NAME = "dataset_0.json"
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
LAYOUT_HELP = (
    "Expected one of two BTCV layouts: the Synapse download "
    "'RawData/Training/img/img0001.nii.gz' + 'RawData/Training/label/label0001.nii.gz' "
    "(optional unlabelled 'RawData/Testing/img/'; the 'RawData/' prefix may be left out), or the tutorial layout "
    "'imagesTr/img0001.nii.gz' + 'labelsTr/label0001.nii.gz' (optional unlabelled 'imagesTs/', optional "
    f"'{DATASET_JSON_NAME}')."
)

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class _Layout:
    """Folders of one recognised BTCV layout.

    Attributes:
        name: ``"synapse"`` or ``"tutorial"``.
        image_dir: folder of labelled images.
        label_dir: folder of labels.
        unlabelled_dirs: folders of unlabelled images (may not exist).
    """

    name: str
    image_dir: Path
    label_dir: Path
    unlabelled_dirs: tuple[Path, ...] = field(default_factory=tuple)


def _candidate_layouts(root: Path) -> list[_Layout]:
    """List the layouts whose folders exist under ``root``, tutorial layout first."""
    layouts: list[_Layout] = []
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        layouts.append(_Layout("tutorial", root / "imagesTr", root / "labelsTr", (root / "imagesTs",)))
    for base in (root / "RawData", root):
        if (base / "Training" / "img").is_dir() or (base / "Testing" / "img").is_dir():
            layouts.append(
                _Layout("synapse", base / "Training" / "img", base / "Training" / "label", (base / "Testing" / "img",))
            )
    return layouts


def case_number(path: Path) -> int:
    """Case number of a BTCV file: the last group of digits of its name (``label0007.nii.gz`` -> 7).

    Raises:
        ValueError: if the file name holds no digits.
    """
    digits = re.findall(r"\d+", nifti_stem(path))
    if not digits:
        raise ValueError(f"Cannot tell the case number of '{path}': its file name holds no digits. {LAYOUT_HELP}")
    return int(digits[-1])


def _nifti_by_case(folder: Path, issues: Issues | None = None) -> dict[int, Path]:
    """Map case number -> NIfTI file for the files directly inside ``folder`` (empty if it does not exist).

    Args:
        folder: folder to list.
        issues: where to collect problems instead of raising (see :func:`find_btcv_cases`).

    Raises:
        ValueError: if two files share a case number or a file name holds no digits.
    """
    if not folder.is_dir():
        return {}
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if not is_nifti(path):
            continue
        try:
            number = case_number(path)
        except ValueError as err:
            raise_or_collect(issues, path, err)
            continue
        if number in found:
            raise_or_collect(
                issues,
                path,
                ValueError(
                    f"Files '{found[number]}' and '{path}' in '{folder}' have the same case number {number}; "
                    "keep one file per case."
                ),
            )
            continue
        found[number] = path
    return found


def find_btcv_cases(
    dataset_dir: PathLike, issues: Issues | None = None
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Find the labelled and unlabelled BTCV cases under ``dataset_dir``.

    Both the Synapse layout (``[RawData/]Training/img``, ``[RawData/]Training/label``, ``[RawData/]Testing/img``) and
    the tutorial layout (``imagesTr``, ``labelsTr``, ``imagesTs``) are recognised; when both are present the tutorial
    layout is used. Images and labels are paired by case number (the digits in the file name).

    Args:
        dataset_dir: folder holding one of the two layouts.
        issues: ``None`` to raise at the first unpaired or ambiguous file; a list to append every such problem to
            as ``(path, exception)`` and return the cases that are fine (what :mod:`shared_networks.validation`
            does to report every problem at once).

    Returns:
        ``(labelled, unlabelled)``: ``labelled`` is ``[{"image": abs_path, "label": abs_path, "case": "img0001"}]``
        and ``unlabelled`` is ``[{"image": abs_path, "case": "img0061"}]``, both sorted by case number.

    Raises:
        FileNotFoundError: if the folder does not exist, holds neither layout, holds no case, or a labelled image
            folder has no label folder.
        ValueError: if an image has no label or a label no image (the message names the file), two files share a
            case number, or a file name holds no digits.
    """
    root = as_dir(dataset_dir, "BTCV dataset folder", LAYOUT_HELP)
    layouts = _candidate_layouts(root)
    if not layouts:
        raise FileNotFoundError(f"No BTCV case found in '{root}'. {LAYOUT_HELP}")
    layout = layouts[0]
    for other in layouts[1:]:
        logger.warning(
            "'%s' holds more than one BTCV layout; using %s, ignoring '%s'.", root, layout.name, other.image_dir
        )

    images = _nifti_by_case(layout.image_dir, issues)
    if images and not layout.label_dir.is_dir():
        raise_or_collect(
            issues,
            layout.label_dir,
            FileNotFoundError(
                f"Label folder '{layout.label_dir}' is missing for the images in '{layout.image_dir}'. {LAYOUT_HELP}"
            ),
        )
    labels = _nifti_by_case(layout.label_dir, issues)
    for number, image in sorted(images.items()):
        if number not in labels and layout.label_dir.is_dir():
            raise_or_collect(
                issues,
                image,
                ValueError(
                    f"Image '{image}' has no label: expected a file with case number {number} in '{layout.label_dir}'."
                ),
            )
    for number, label in sorted(labels.items()):
        if number not in images:
            raise_or_collect(
                issues,
                label,
                ValueError(
                    f"Label '{label}' has no image: expected a file with case number {number} in '{layout.image_dir}'."
                ),
            )
    paired = sorted(set(images) & set(labels))
    labelled = [{"image": str(images[n]), "label": str(labels[n]), "case": nifti_stem(images[n])} for n in paired]

    unlabelled_by_case: dict[int, Path] = {}
    for folder in layout.unlabelled_dirs:
        for number, image in _nifti_by_case(folder, issues).items():
            if number in unlabelled_by_case:
                raise_or_collect(
                    issues,
                    image,
                    ValueError(
                        f"Unlabelled images '{unlabelled_by_case[number]}' and '{image}' have the same case number "
                        f"{number}; keep one file per case."
                    ),
                )
                continue
            unlabelled_by_case[number] = image
    unlabelled = [{"image": str(path), "case": nifti_stem(path)} for _, path in sorted(unlabelled_by_case.items())]

    if not labelled and not unlabelled and not (issues and images):
        searched = ", ".join(f"'{d}'" for d in (layout.image_dir, *layout.unlabelled_dirs))
        raise FileNotFoundError(f"No BTCV case (.nii or .nii.gz file) found in {searched}. {LAYOUT_HELP}")
    logger.info(
        "BTCV %s layout in '%s': %d labelled, %d unlabelled cases.", layout.name, root, len(labelled), len(unlabelled)
    )
    return labelled, unlabelled


def dataset_json_lists(
    root: Path, content: Mapping[str, Any] | None = None, issues: Issues | None = None
) -> dict[str, list[dict[str, str]]]:
    """The ``training``/``validation`` (labelled) and ``test`` (image) lists of the tutorial's ``dataset_0.json``.

    Every path must lead to a file inside ``root`` (``..`` and symbolic links resolved); ``training`` and
    ``validation`` must not be empty; no image may be in two lists
    (:func:`~shared_networks.data.files.split_file_lists`). The files are not opened here.

    Args:
        root: the BTCV folder (resolved).
        content: the file's JSON object, when already read.
        issues: ``None`` to raise at the first problem; a list to append every problem to and leave bad entries out.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``: items ``{"image", "label", "case"}`` (test items
        ``{"image", "case"}``) with absolute paths.

    Raises:
        ValueError: naming ``dataset_0.json``: not UTF-8 JSON, a malformed entry, a path leading outside ``root``, an
            empty ``training`` or ``validation`` list, an image in two lists.
    """
    source = root / DATASET_JSON_NAME
    content = read_json_object(source, "BTCV split file") if content is None else content
    lists = split_file_lists(
        source, content, root, ("training", "validation"), ("test",), ("training", "validation"), issues
    )
    for items in lists.values():
        for item in items:
            item.setdefault("case", nifti_stem(item["image"]))
    return lists
