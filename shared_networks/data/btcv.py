"""BTCV (Beyond the Cranial Vault, abdominal CT with 13 organ labels) datalists.

Two public layouts of the data set are recognised under a ``dataset_dir``:

* the Synapse download (``RawData.zip``)::

      RawData/Training/img/img0001.nii.gz      RawData/Training/label/label0001.nii.gz
      RawData/Testing/img/img0061.nii.gz       (unlabelled)

  The same tree without the ``RawData/`` prefix (``Training/img``, ``Training/label``, ``Testing/img``) is accepted.

* the tutorial layout used by the UNETR / Swin-UNETR MONAI tutorials::

      imagesTr/img0001.nii.gz   labelsTr/label0001.nii.gz
      imagesTs/img0061.nii.gz   (optional, unlabelled)
      dataset_0.json            (optional; its ``training``/``validation`` lists are a pre-made split)

Images and labels are paired by the case number (the digits in the file name), never by sorted order.
:func:`btcv_datalist` turns the cases into ``training`` / ``validation`` / ``test`` lists of labelled items and a
``pretrain`` list of images for self pre-training: the training images, plus the unlabelled images only with
``pretrain_extra_images=True``; never a validation or test image.

Command line (checks every file, then writes the datalist JSON)::

    python -m shared_networks.cli.prepare btcv --dataset_dir DIR --output_json FILE [--split transunet] [--seed 0]
        [--pretrain_extra_images true]
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared_networks.data.files import (
    Issues,
    check_disjoint,
    is_nifti,
    load_datalist_file,
    nifti_stem,
    raise_or_collect,
    read_json_object,
    relative_to,
    resolve_path,
    split_file_lists,
)
from shared_networks.data.pretrain import pretrain_extra_flag, pretrain_items, select_pretrain
from shared_networks.utils.files import write_json_atomic
from shared_networks.utils.paths import as_dir

__all__ = [
    "BTCV_LABELS",
    "SPLITS",
    "TRANSUNET_TEST_CASES",
    "btcv_datalist",
    "dataset_json_lists",
    "find_btcv_cases",
    "write_btcv_datalist",
]

logger = logging.getLogger(__name__)
PRETRAIN_KEYS = ("image", "case")  # what pre-training reads of an item

BTCV_LABELS: dict[int, str] = {
    0: "background",
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior vena cava",
    10: "portal and splenic vein",
    11: "pancreas",
    12: "right adrenal gland",
    13: "left adrenal gland",
}
"""BTCV label values and organ names (the numbering of the challenge and of the MONAI tutorials)."""

TRANSUNET_TEST_CASES: tuple[int, ...] = (1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38)
"""Case numbers of the usual 12-case test set of TransUNet / Swin-UNETR papers (the other 18 labelled cases train)."""

SPLITS: tuple[str, ...] = ("seeded", "transunet", "dataset_json")
"""Allowed values of the ``split`` argument of :func:`btcv_datalist`."""

DATASET_JSON_NAME = "dataset_0.json"
LIST_KEYS: tuple[str, ...] = ("training", "validation", "test", "pretrain")

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
_LAYOUT_HELP = (
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


def _case_number(path: Path) -> int:
    """Case number of a BTCV file: the last group of digits of its name (``label0007.nii.gz`` -> 7).

    Raises:
        ValueError: if the file name holds no digits.
    """
    digits = re.findall(r"\d+", nifti_stem(path))
    if not digits:
        raise ValueError(f"Cannot tell the case number of '{path}': its file name holds no digits. {_LAYOUT_HELP}")
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
            number = _case_number(path)
        except ValueError as err:
            raise_or_collect(issues, path, err)
            continue
        if number in found:
            raise_or_collect(issues, path, ValueError(
                f"Files '{found[number]}' and '{path}' in '{folder}' have the same case number {number}; "
                "keep one file per case."
            ))  # fmt: skip
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
    root = as_dir(dataset_dir, "BTCV dataset folder", _LAYOUT_HELP)
    layouts = _candidate_layouts(root)
    if not layouts:
        raise FileNotFoundError(f"No BTCV case found in '{root}'. {_LAYOUT_HELP}")
    layout = layouts[0]
    for other in layouts[1:]:
        logger.warning(
            "'%s' holds more than one BTCV layout; using %s, ignoring '%s'.", root, layout.name, other.image_dir
        )

    images = _nifti_by_case(layout.image_dir, issues)
    if images and not layout.label_dir.is_dir():
        raise_or_collect(issues, layout.label_dir, FileNotFoundError(
            f"Label folder '{layout.label_dir}' is missing for the images in '{layout.image_dir}'. {_LAYOUT_HELP}"
        ))  # fmt: skip
    labels = _nifti_by_case(layout.label_dir, issues)
    for number, image in sorted(images.items()):
        if number not in labels and layout.label_dir.is_dir():
            raise_or_collect(issues, image, ValueError(
                f"Image '{image}' has no label: expected a file with case number {number} in '{layout.label_dir}'."
            ))  # fmt: skip
    for number, label in sorted(labels.items()):
        if number not in images:
            raise_or_collect(issues, label, ValueError(
                f"Label '{label}' has no image: expected a file with case number {number} in '{layout.image_dir}'."
            ))  # fmt: skip
    paired = sorted(set(images) & set(labels))
    labelled = [{"image": str(images[n]), "label": str(labels[n]), "case": nifti_stem(images[n])} for n in paired]

    unlabelled_by_case: dict[int, Path] = {}
    for folder in layout.unlabelled_dirs:
        for number, image in _nifti_by_case(folder, issues).items():
            if number in unlabelled_by_case:
                raise_or_collect(issues, image, ValueError(
                    f"Unlabelled images '{unlabelled_by_case[number]}' and '{image}' have the same case number "
                    f"{number}; keep one file per case."
                ))  # fmt: skip
                continue
            unlabelled_by_case[number] = image
    unlabelled = [{"image": str(path), "case": nifti_stem(path)} for _, path in sorted(unlabelled_by_case.items())]

    if not labelled and not unlabelled and not (issues and images):
        searched = ", ".join(f"'{d}'" for d in (layout.image_dir, *layout.unlabelled_dirs))
        raise FileNotFoundError(f"No BTCV case (.nii or .nii.gz file) found in {searched}. {_LAYOUT_HELP}")
    logger.info(
        "BTCV %s layout in '%s': %d labelled, %d unlabelled cases.", layout.name, root, len(labelled), len(unlabelled)
    )
    return labelled, unlabelled


def _round_half_up(value: float) -> int:
    """Round a non-negative number to the nearest integer, halves upwards (2.5 -> 3)."""
    return int(math.floor(value + 0.5))


def _check_arguments(split: str, seed: int, val_fraction: float, test_fraction: float, num_val: int | None) -> None:
    """Validate the split arguments of :func:`btcv_datalist`.

    Raises:
        ValueError: naming the argument and what is wrong with it.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown BTCV split {split!r}; allowed splits are {', '.join(repr(s) for s in SPLITS)}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}.")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    if float(val_fraction) + float(test_fraction) >= 1.0:
        raise ValueError(
            "val_fraction + test_fraction must be below 1 to leave training cases, "
            f"got {val_fraction} + {test_fraction}."
        )
    if num_val is not None and (isinstance(num_val, bool) or not isinstance(num_val, (int, np.integer)) or num_val < 0):
        raise ValueError(f"num_val must be None or a non-negative integer, got {num_val!r}.")


def _seeded_split(
    cases: list[dict[str, str]], seed: int, val_fraction: float, test_fraction: float, num_val: int | None
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """Shuffle the labelled cases with ``seed`` and cut test, then validation, then training.

    Returns:
        ``(training, validation, test)``, each sorted like ``cases``.
    """
    n = len(cases)
    if n == 0:
        return [], [], []
    if n == 1:
        logger.warning("Only one labelled BTCV case: it is used for training; validation and test are empty.")
        return list(cases), [], []
    if n == 2:
        n_test = 0
        n_val = 0 if num_val == 0 or (num_val is None and val_fraction == 0) else 1
        if num_val is not None and num_val > 1:
            raise ValueError(f"num_val={num_val} leaves no training case: only 2 labelled BTCV cases were found.")
        logger.warning("Only two labelled BTCV cases: the test list is empty.")
    else:
        min_test = 1 if test_fraction > 0 else 0
        n_test = max(min_test, _round_half_up(test_fraction * n))
        if num_val is not None:
            n_val = int(num_val)
            if n_val + min_test >= n:
                raise ValueError(
                    f"num_val={n_val} leaves no training case: only {n} labelled BTCV cases were found "
                    f"({min_test} kept for test)."
                )
            n_test = min(n_test, n - 1 - n_val)
        else:
            min_val = 1 if val_fraction > 0 else 0
            n_val = max(min_val, _round_half_up(val_fraction * n))
            while n_test + n_val > n - 1:  # keep at least one training case
                if n_test >= n_val and n_test > min_test:
                    n_test -= 1
                else:
                    n_val -= 1
    order = np.random.default_rng(seed).permutation(n)
    test_idx = sorted(int(i) for i in order[:n_test])
    val_idx = sorted(int(i) for i in order[n_test : n_test + n_val])
    train_idx = sorted(int(i) for i in order[n_test + n_val :])
    return [cases[i] for i in train_idx], [cases[i] for i in val_idx], [cases[i] for i in test_idx]


def _transunet_split(
    cases: list[dict[str, str]], seed: int, val_fraction: float, num_val: int | None
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """Test on the TransUNet cases that are present; carve validation from the others with ``seed``.

    Returns:
        ``(training, validation, test)``, each sorted like ``cases``.
    """
    test_numbers = set(TRANSUNET_TEST_CASES)
    test = [c for c in cases if _case_number(Path(c["image"])) in test_numbers]
    pool = [c for c in cases if _case_number(Path(c["image"])) not in test_numbers]
    if len(test) < len(TRANSUNET_TEST_CASES):
        logger.warning("Only %d of the %d TransUNet test cases are present.", len(test), len(TRANSUNET_TEST_CASES))
    n_pool = len(pool)
    if num_val is not None:
        n_val = int(num_val)
        if n_val > 0 and n_val >= n_pool:
            raise ValueError(
                f"num_val={n_val} leaves no training case: only {n_pool} labelled BTCV cases lie outside the "
                "TransUNet test set."
            )
    else:
        n_val = max(1, _round_half_up(val_fraction * n_pool)) if n_pool > 1 and val_fraction > 0 else 0
        n_val = min(n_val, max(n_pool - 1, 0))
    order = np.random.default_rng(seed).permutation(n_pool)
    val_idx = sorted(int(i) for i in order[:n_val])
    train_idx = sorted(int(i) for i in order[n_val:])
    return [pool[i] for i in train_idx], [pool[i] for i in val_idx], test


def _labelled_items(source: Path, key: str, entries: Any, root: Path) -> list[dict[str, str]]:
    """Parse a list of ``{"image", "label"}`` entries of a datalist file into items with absolute paths.

    Raises:
        ValueError: if the list or one of its entries is malformed (the message names the file, key and index).
    """
    if not isinstance(entries, list):
        raise ValueError(f"Datalist '{source}': '{key}' must be a list, got {type(entries).__name__}.")
    items = []
    for index, entry in enumerate(entries):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("image"), str)
            or not isinstance(entry.get("label"), str)
        ):
            raise ValueError(
                f"Datalist '{source}': entry {index} of '{key}' must be an object with 'image' and 'label' paths, "
                f"got {entry!r}."
            )
        image = resolve_path(root, entry["image"])
        case = entry.get("case")
        items.append(
            {
                "image": str(image),
                "label": str(resolve_path(root, entry["label"])),
                "case": case if isinstance(case, str) and case else nifti_stem(image),
            }
        )
    return items


def _image_items(source: Path, key: str, entries: Any, root: Path) -> list[dict[str, str]]:
    """Parse a list of image entries (``{"image": path}`` objects or plain path strings) into items.

    Raises:
        ValueError: if the list or one of its entries is malformed (the message names the file, key and index).
    """
    if not isinstance(entries, list):
        raise ValueError(f"Datalist '{source}': '{key}' must be a list, got {type(entries).__name__}.")
    items = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise ValueError(
                f"Datalist '{source}': entry {index} of '{key}' must be an image path or an object with an 'image' "
                f"path, got {entry!r}."
            )
        image = resolve_path(root, entry["image"])
        case = entry.get("case")
        items.append({"image": str(image), "case": case if isinstance(case, str) and case else nifti_stem(image)})
    return items


def _check_exist(source: Path, items: Iterable[dict[str, str]]) -> None:
    """Check that every ``image``/``label`` path of ``items`` is a file.

    Raises:
        FileNotFoundError: listing every missing file and naming ``source``.
    """
    missing = sorted(
        {item[k] for item in items for k in ("image", "label") if k in item and not Path(item[k]).is_file()}
    )
    if missing:
        listed = "\n  ".join(missing)
        raise FileNotFoundError(f"Datalist '{source}' references {len(missing)} missing file(s):\n  {listed}")


def _load_datalist_file(
    root: Path, datalist_file: PathLike, pretrain_extra_images: bool = False, check_files: bool = True
) -> dict[str, list[dict[str, str]]]:
    """A datalist JSON (:func:`~shared_networks.data.files.load_datalist_file`) with its files checked.

    ``check_files=False`` leaves out the check that the files exist (for :mod:`shared_networks.validation`, which
    examines every file itself).
    """

    def parse(source: Path, key: str, entries: Any, labelled: bool) -> list[dict[str, str]]:
        return _labelled_items(source, key, entries, root) if labelled else _image_items(source, key, entries, root)

    def check(source: Path, datalist: dict[str, list[dict[str, str]]]) -> None:
        if check_files:
            _check_exist(source, [item for key in LIST_KEYS for item in datalist[key]])
        check_disjoint(f"Datalist '{source}'", datalist)

    return load_datalist_file(datalist_file, parse, check, pretrain_extra_images, PRETRAIN_KEYS)


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
    lists = split_file_lists(source, content, root, ("training", "validation"), ("test",), ("training", "validation"),
                             issues)  # fmt: skip
    for items in lists.values():
        for item in items:
            item.setdefault("case", nifti_stem(item["image"]))
    return lists


def _dataset_json_split(
    root: Path, unlabelled: list[dict[str, str]]
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """Read the pre-made split of the tutorial's ``dataset_0.json`` (:func:`dataset_json_lists`).

    Returns:
        ``(training, validation, unlabelled)`` where ``unlabelled`` adds the existing images of the file's ``test``
        list to the given unlabelled images.

    Raises:
        ValueError: if ``dataset_0.json`` is absent or malformed, names a file outside ``root``, has an empty
            training or validation list, or lists an image twice.
        FileNotFoundError: if a training or validation file it lists is missing.
    """
    source = root / DATASET_JSON_NAME
    if not source.is_file():
        raise ValueError(
            f"split='dataset_json' needs '{source}', which does not exist; use split='seeded' or 'transunet', "
            "or pass datalist_file."
        )
    lists = dataset_json_lists(root)
    training, validation = lists["training"], lists["validation"]
    _check_exist(source, training + validation)
    extra = []
    for item in lists["test"]:
        if Path(item["image"]).is_file():
            extra.append(item)
        else:
            logger.warning("'%s' lists test image '%s', which is missing; it is left out.", source, item["image"])
    return training, validation, pretrain_items(unlabelled, extra, keys=PRETRAIN_KEYS)


def btcv_datalist(
    dataset_dir: PathLike,
    split: str = "seeded",
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    num_val: int | None = None,
    datalist_file: PathLike | None = None,
    pretrain_extra_images: bool = False,
    check_files: bool = True,
) -> dict[str, list[dict[str, str]]]:
    """Build the BTCV datalist: labelled ``training``/``validation``/``test`` lists and an image-only ``pretrain`` list.

    Splits:

    * ``"seeded"``: the labelled cases are shuffled with ``numpy.random.default_rng(seed)``; the first
      ``round(test_fraction * n)`` are test, the next ``round(val_fraction * n)`` (or ``num_val``) validation, the
      rest training. With 3 or more cases test and validation each hold at least one case (when their fraction is
      above 0) and training keeps at least one. With 2 cases: 1 training, 1 validation, no test. With 1 case: it is
      the training case and validation and test are empty.
    * ``"transunet"``: test is the cases of :data:`TRANSUNET_TEST_CASES` that are present; validation is ``num_val``
      cases (default ``max(1, round(val_fraction * n_rest))``) drawn with ``seed`` from the remaining cases, which
      keep at least one training case.
    * ``"dataset_json"``: the ``training``/``validation`` lists of the tutorial's ``dataset_0.json``; test is empty.
      Every path of the file must lead inside ``dataset_dir``, and neither list may be empty
      (:func:`dataset_json_lists`).

    ``pretrain`` holds the training images; with ``pretrain_extra_images=True`` also every unlabelled image
    (``imagesTs``, ``Testing/img``, and for ``dataset_json`` the file's ``test`` list; for a ``datalist_file`` the
    other images of its ``pretrain`` list). It never holds a validation or test image.

    Args:
        dataset_dir: folder of one of the two BTCV layouts (see :func:`find_btcv_cases`); relative paths of
            ``datalist_file`` are resolved against it.
        split: ``"seeded"``, ``"transunet"`` or ``"dataset_json"``; ignored when ``datalist_file`` is given.
        seed: seed of the shuffle (``seeded`` and ``transunet``).
        val_fraction: fraction of cases for validation (of all labelled cases for ``seeded``, of the non-test cases
            for ``transunet``).
        test_fraction: fraction of labelled cases for test (``seeded`` only).
        num_val: number of validation cases; overrides ``val_fraction`` (``seeded`` and ``transunet``).
        datalist_file: a JSON datalist to load instead of splitting (keys ``training``, ``validation``, ``test``,
            ``pretrain``; a missing key is an empty list).
        pretrain_extra_images: add the unlabelled images to ``pretrain`` (default: the training images alone, as
            the method pre-trains on the target training set only).
        check_files: check that the files of a ``datalist_file`` exist; :mod:`shared_networks.validation` turns this
            off to examine every file itself and report each problem.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...], "pretrain": [...]}``; labelled items are
        ``{"image", "label", "case"}``, pretrain items ``{"image", "case"}``, all with absolute paths. The same inputs
        give the same output.

    Raises:
        ValueError: unknown ``split``, bad fractions or ``num_val``, ``dataset_0.json`` absent for
            ``split="dataset_json"`` (or naming a file outside ``dataset_dir``, or with an empty list), unpaired
            image/label files, malformed or overlapping datalist lists.
        FileNotFoundError: missing ``dataset_dir``, no case found, or files referenced by a datalist are missing.
    """
    _check_arguments(split, seed, val_fraction, test_fraction, num_val)
    extra_images = pretrain_extra_flag(pretrain_extra_images)
    if datalist_file is not None:
        root = Path(dataset_dir).expanduser().resolve()
        logger.info("Loading BTCV datalist '%s' (split=%r is ignored).", datalist_file, split)
        return _load_datalist_file(root, datalist_file, extra_images, check_files)

    root = as_dir(dataset_dir, "BTCV dataset folder", _LAYOUT_HELP)
    labelled, unlabelled = find_btcv_cases(root)
    if split == "seeded":
        training, validation, test = _seeded_split(
            labelled, int(seed), float(val_fraction), float(test_fraction), num_val
        )
    elif split == "transunet":
        training, validation, test = _transunet_split(labelled, int(seed), float(val_fraction), num_val)
    else:
        training, validation, unlabelled = _dataset_json_split(root, unlabelled)
        test = []
    evaluation = {item["image"] for item in validation + test}
    datalist = {
        "training": training,
        "validation": validation,
        "test": test,
        "pretrain": select_pretrain(
            training, [i for i in unlabelled if i["image"] not in evaluation], extra_images, f"BTCV '{root}'",
            keys=PRETRAIN_KEYS,
        ),
    }
    check_disjoint(f"BTCV split {split!r} of '{root}'", datalist)
    logger.info(
        "BTCV %s split: %d training, %d validation, %d test, %d pretrain images.",
        split,
        len(training),
        len(validation),
        len(test),
        len(datalist["pretrain"]),
    )
    return datalist


def write_btcv_datalist(
    dataset_dir: PathLike,
    output_json: PathLike,
    split: str = "seeded",
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    num_val: int | None = None,
    datalist_file: PathLike | None = None,
    pretrain_extra_images: bool = False,
) -> Path:
    """Write a BTCV datalist JSON (training/validation/test/pretrain) for a BTCV folder.

    The dataset folder may hold either public layout. The Synapse download: RawData/Training/img/img0001.nii.gz
    with RawData/Training/label/label0001.nii.gz and unlabelled RawData/Testing/img/ (the RawData/ prefix may be
    left out). The tutorial layout of UNETR/Swin-UNETR: imagesTr/img0001.nii.gz with labelsTr/label0001.nii.gz,
    optional unlabelled imagesTs/ and an optional dataset_0.json with a pre-made training/validation split.
    Images and labels are paired by the case number in their file names. Paths under the dataset folder are
    written relative to it; the file is written atomically (temporary file, then rename).

    The files are not checked here; ``python -m shared_networks.cli.prepare`` checks them first
    (:mod:`shared_networks.validation`).

    Args:
        dataset_dir: folder of the BTCV data set (either layout).
        output_json: JSON file to write.
        split: "seeded" (random split with seed), "transunet" (the usual 12 test cases) or "dataset_json" (the
            split of dataset_0.json).
        seed: seed of the random split.
        val_fraction: fraction of cases for validation.
        test_fraction: fraction of cases for test ("seeded" only).
        num_val: number of validation cases; overrides val_fraction.
        datalist_file: an existing datalist JSON to check and rewrite instead of splitting.
        pretrain_extra_images: add the unlabelled images (imagesTs/, Testing/img/) to the pretrain list; default:
            the training images alone.

    Returns:
        The absolute path of the written JSON file.
    """
    datalist = btcv_datalist(
        dataset_dir,
        split=split,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        num_val=num_val,
        datalist_file=datalist_file,
        pretrain_extra_images=pretrain_extra_images,
    )
    root = Path(dataset_dir).expanduser().resolve()
    content = {
        key: [{k: (relative_to(root, v) if k in ("image", "label") else v) for k, v in item.items()} for item in items]
        for key, items in datalist.items()
    }
    target = write_json_atomic(content, output_json)
    logger.info("Wrote BTCV datalist '%s'.", target)
    return target
