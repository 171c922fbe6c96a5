"""Brain tumour MRI datalists in the two public layouts: MSD Task01 and BraTS 2021 (4 modalities, tumour labels).

Two layouts are recognised under a ``dataset_dir``:

* the Medical Segmentation Decathlon, ``Task01_BrainTumour``::

      imagesTr/BRATS_001.nii.gz    4-D: (X, Y, Z, 4), channels FLAIR, T1w, t1gd, T2w
      labelsTr/BRATS_001.nii.gz    3-D: 0 background, 1 edema, 2 non-enhancing tumour, 3 enhancing tumour
      imagesTs/BRATS_485.nii.gz    (unlabelled)
      dataset.json                 (optional)

* the BraTS 2021 challenge (also 2018-2020) folders, directly under ``dataset_dir`` or one level deeper (the
  release folder, e.g. ``RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021/``)::

      BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2}.nii.gz
      BraTS2021_00000/BraTS2021_00000_seg.nii.gz   0 background, 1 necrotic core, 2 edema, 4 enhancing tumour
      BraTS2021_01001/...                          (no seg: unlabelled)

Whatever the layout, the image of an item has the 4 modalities as channels in one order, :data:`MODALITIES`
(FLAIR, T1w, T1gd, T2w: the MSD order). For BraTS 2021 the item's ``image`` is the list of the 4 files in that order,
which MONAI's ``LoadImaged`` stacks as channels. Every item carries its ``layout`` (``"msd"`` or ``"brats2021"``),
which selects the label convention of :mod:`shared_networks.data.regions`.

Headers are checked when a datalist is built (nibabel reads only the header): an MSD image that is not 4-D with 4
channels, BraTS modalities of different shapes or affines, a missing modality, or a label on another grid is refused
with an error naming the file.

Split (:func:`brats_datalist`): the labelled cases are shuffled with ``seed`` and dealt round-robin into
``num_folds`` folds; ``fold`` k is the test split, fold (k + 1) mod ``num_folds`` the validation split, the others
training. The pre-training list is the training images; unlabelled images join it only with
``pretrain_extra_images=True``. It never holds a validation or test image.

Modules: :mod:`~shared_networks.data.brats_layouts` (the layouts, their cases, header checks, inference inputs) and
this one (the fold split, datalist files, the datalist). Their public names are importable from here.

Command line (checks every file, then writes the datalist JSON)::

    python -m shared_networks.cli.prepare brats --dataset_dir DIR --output_json FILE [--fold 0] [--num_folds 5]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared_networks.data.brats_layouts import (
    BRATS2021_LABEL_SUFFIX,
    BRATS2021_SUFFIXES,
    LAYOUT_HELP,
    LAYOUTS,
    MODALITIES,
    Item,
    PathLike,
    brats_inference_inputs,
    case_name_formatter,
    check_case,
    find_brats_cases,
)
from shared_networks.data.files import check_disjoint, load_datalist_file, nifti_stem, relative_to, resolve_path
from shared_networks.data.pretrain import image_key, pretrain_extra_flag, select_pretrain
from shared_networks.utils.files import write_json_atomic
from shared_networks.utils.paths import as_dir

__all__ = [
    "BRATS2021_LABEL_SUFFIX",
    "BRATS2021_SUFFIXES",
    "LAYOUTS",
    "LIST_KEYS",
    "MODALITIES",
    "brats_datalist",
    "brats_inference_inputs",
    "case_name_formatter",
    "check_case",
    "find_brats_cases",
    "fold_split",
    "write_brats_datalist",
]

logger = logging.getLogger(__name__)
PRETRAIN_KEYS = ("image", "case", "layout")  # what pre-training reads of an item
LIST_KEYS: tuple[str, ...] = ("training", "validation", "test", "pretrain")


# ---- split ----


def _check_fold(fold: int, num_folds: int, seed: int) -> None:
    """Raise ``ValueError`` naming the bad split argument."""
    for name, value in (("fold", fold), ("num_folds", num_folds), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}.")
    if num_folds < 3:
        raise ValueError(f"num_folds must be at least 3 (test, validation and training folds), got {num_folds}.")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in 0..{num_folds - 1}, got {fold}.")


def fold_split(cases: Sequence[Item], fold: int = 0, num_folds: int = 5, seed: int = 0) -> tuple[list, list, list]:
    """Seeded k-fold split into training, validation and test.

    The cases are shuffled with ``numpy.random.default_rng(seed)`` and dealt round-robin into
    ``k = min(num_folds, n)`` folds: test is fold ``fold mod k``, validation fold ``(fold + 1) mod k``, training the
    rest. So with ``n >= num_folds`` every case is a test case in exactly one fold. Small sets degrade gracefully:
    3 or 4 cases give folds of one case; 2 cases give 1 validation and 1 training case and no test; 1 case is
    training only.

    Args:
        cases: labelled items, in a fixed order.
        fold: the test fold, ``0 <= fold < num_folds``.
        num_folds: number of folds, at least 3.
        seed: seed of the shuffle.

    Returns:
        ``(training, validation, test)``, each in the order of ``cases``.
    """
    _check_fold(fold, num_folds, seed)
    n = len(cases)
    order = np.random.default_rng(int(seed)).permutation(n)
    if n >= 3:
        k = min(int(num_folds), n)
        fold_of = {int(case): i % k for i, case in enumerate(order)}
        test_fold, val_fold = fold % k, (fold + 1) % k
    elif n == 2:
        logger.warning("Only two labelled cases: one validation case, one training case, no test case.")
        fold_of = {int(order[fold % 2]): 1, int(order[(fold + 1) % 2]): 2}
        test_fold, val_fold = 0, 1
    else:
        if n == 1:
            logger.warning("Only one labelled case: it is the training case; validation and test are empty.")
        fold_of = dict.fromkeys(range(n), 2)
        test_fold, val_fold = 0, 1
    test = [c for i, c in enumerate(cases) if fold_of[i] == test_fold]
    validation = [c for i, c in enumerate(cases) if fold_of[i] == val_fold]
    training = [c for i, c in enumerate(cases) if fold_of[i] not in (test_fold, val_fold)]
    return training, validation, test


def _check_disjoint_lists(source: str, datalist: Mapping[str, list[Item]]) -> None:
    """No image in two of training/validation/test, none of validation/test in pretrain (raises ``ValueError``)."""
    check_disjoint(source, {k: [{"image": image_key(i["image"])} for i in datalist[k]] for k in LIST_KEYS})


def _file_items(source: Path, key: str, entries: Any, root: Path, labelled: bool) -> list[Item]:
    """Parse one list of a datalist file into items with absolute paths and a layout.

    ``image`` is a path (MSD 4-D file) or a list of 4 paths (BraTS 2021 modalities, in :data:`MODALITIES` order);
    ``layout`` defaults to ``"brats2021"`` for a list and ``"msd"`` for a path. Image-only lists may hold plain paths.

    Raises:
        ValueError: naming the file, the list and the entry when an entry is malformed.
    """
    if not isinstance(entries, list):
        raise ValueError(f"datalist '{source}': '{key}' must be a list, got {type(entries).__name__}.")
    items = []
    for index, entry in enumerate(entries):
        if isinstance(entry, (str, list)) and not labelled:
            entry = {"image": entry}
        image = entry.get("image") if isinstance(entry, dict) else None
        ok = isinstance(image, str) or (isinstance(image, list) and all(isinstance(p, str) for p in image))
        ok = ok and (not labelled or isinstance(entry.get("label"), str))
        layout = entry.get("layout", "brats2021" if isinstance(image, list) else "msd") if ok else None
        if not ok or layout not in LAYOUTS:
            wanted = "'image' (a path or 4 paths) and 'label'" if labelled else "an 'image' (a path or 4 paths)"
            raise ValueError(
                f"datalist '{source}': entry {index} of '{key}' must be an object with {wanted}"
                f" and an optional 'layout' in {LAYOUTS}, got {entry!r}."
            )
        if isinstance(image, str):
            paths: str | list[str] = str(resolve_path(root, image))
        else:
            paths = [str(resolve_path(root, p)) for p in image]
        first = paths if isinstance(paths, str) else paths[0]
        case = entry.get("case")
        if not (isinstance(case, str) and case):
            case = nifti_stem(first) if isinstance(paths, str) else Path(first).parent.name
        item: Item = {"image": paths, "case": case, "layout": layout}
        if labelled:
            item["label"] = str(resolve_path(root, entry["label"]))
        items.append(item)
    return items


def _load_datalist_file(
    root: Path, datalist_file: PathLike, check_headers: bool = True, pretrain_extra_images: bool = False
) -> dict[str, list[Item]]:
    """A datalist JSON (:func:`~shared_networks.data.files.load_datalist_file`) with its cases checked."""

    def parse(source: Path, key: str, entries: Any, labelled: bool) -> list[Item]:
        return _file_items(source, key, entries, root, labelled)

    def check(source: Path, datalist: dict[str, list[Item]]) -> None:
        for key in LIST_KEYS if check_headers else ():
            for item in datalist[key]:
                check_case(item)
        _check_disjoint_lists(f"datalist '{source}'", datalist)

    return load_datalist_file(datalist_file, parse, check, pretrain_extra_images, PRETRAIN_KEYS)


def brats_datalist(
    dataset_dir: PathLike,
    fold: int = 0,
    num_folds: int = 5,
    seed: int = 0,
    datalist_file: PathLike | None = None,
    check_headers: bool = True,
    pretrain_extra_images: bool = False,
) -> dict[str, list[Item]]:
    """Build the datalist of an MSD Task01 or BraTS 2021 folder: a seeded k-fold split plus a pre-training list.

    See :func:`fold_split` for the split rule. ``pretrain`` holds the training images; with
    ``pretrain_extra_images=True`` also every unlabelled image (MSD ``imagesTs``, BraTS folders without ``seg``; for a
    ``datalist_file`` the other images of its ``pretrain`` list). It never holds a validation or test image.

    Args:
        dataset_dir: folder of either layout; relative paths of ``datalist_file`` are resolved against it.
        fold: test fold; validation is the next fold.
        num_folds: number of folds, at least 3.
        seed: seed of the shuffle.
        datalist_file: a JSON datalist to use instead of the split (keys ``training``, ``validation``, ``test``,
            ``pretrain``; items ``{"image": path or [flair, t1, t1ce, t2], "label": path, "layout": optional}``).
        check_headers: check every case's headers (:func:`check_case`); :mod:`shared_networks.validation` turns this
            off to read every file itself and report every problem.
        pretrain_extra_images: add the unlabelled images to ``pretrain`` (default: the training images alone, as
            the method pre-trains on the target training set only).

    Returns:
        ``{"training", "validation", "test", "pretrain"}`` lists of items with absolute paths, ``case`` and
        ``layout``; the same inputs give the same output.

    Raises:
        ValueError: bad split arguments, malformed or overlapping lists, files whose headers do not fit.
        FileNotFoundError: missing folder or files, or no case found.
    """
    _check_fold(fold, num_folds, seed)
    extra_images = pretrain_extra_flag(pretrain_extra_images)
    if datalist_file is not None:
        logger.info("Loading datalist '%s' (fold=%s is ignored).", datalist_file, fold)
        root = Path(dataset_dir).expanduser().resolve()
        return _load_datalist_file(root, datalist_file, check_headers, extra_images)
    root = as_dir(dataset_dir, "brain tumour dataset folder", LAYOUT_HELP)
    labelled, unlabelled, layout = find_brats_cases(root, check_headers=check_headers)
    training, validation, test = fold_split(labelled, fold, num_folds, seed)
    datalist = {
        "training": training,
        "validation": validation,
        "test": test,
        "pretrain": select_pretrain(
            training, unlabelled, extra_images, f"{layout} folder '{root}'", keys=PRETRAIN_KEYS
        ),
    }
    _check_disjoint_lists(f"{layout} fold {fold} of '{root}'", datalist)
    logger.info(
        "%s fold %d/%d: %d training, %d validation, %d test, %d pretrain images.",
        layout,
        fold,
        num_folds,
        len(training),
        len(validation),
        len(test),
        len(datalist["pretrain"]),
    )
    return datalist


def write_brats_datalist(
    dataset_dir: PathLike,
    output_json: PathLike,
    fold: int = 0,
    num_folds: int = 5,
    seed: int = 0,
    datalist_file: PathLike | None = None,
    pretrain_extra_images: bool = False,
) -> Path:
    """Write the datalist JSON (training/validation/test/pretrain) of an MSD Task01 or BraTS 2021 folder.

    The folder may hold the MSD Task01 layout (imagesTr/ 4-D FLAIR, T1w, t1gd, T2w files, labelsTr/, optional
    unlabelled imagesTs/) or BraTS 2021 case folders (BraTS2021_NNNNN/BraTS2021_NNNNN_{flair,t1,t1ce,t2,seg}.nii.gz;
    folders without seg are unlabelled). The labelled cases are shuffled with the seed and dealt into num_folds
    folds: test is fold `fold`, validation the next fold, training the rest. Paths under the folder are written
    relative to it; the file is written atomically.

    The files are not checked here; ``python -m shared_networks.cli.prepare`` checks them first
    (:mod:`shared_networks.validation`).

    Args:
        dataset_dir: folder of the data set (either layout).
        output_json: JSON file to write.
        fold: test fold (validation is fold + 1 mod num_folds).
        num_folds: number of folds.
        seed: seed of the split.
        datalist_file: an existing datalist JSON to check and rewrite instead of splitting.
        pretrain_extra_images: add the unlabelled images (MSD imagesTs/, BraTS folders without seg) to the pretrain
            list; default: the training images alone.

    Returns:
        The absolute path of the written file.
    """
    datalist = brats_datalist(
        dataset_dir,
        fold=fold,
        num_folds=num_folds,
        seed=seed,
        datalist_file=datalist_file,
        pretrain_extra_images=pretrain_extra_images,
    )
    root = Path(dataset_dir).expanduser().resolve()

    def rel(value: Any) -> Any:
        return [relative_to(root, v) for v in value] if isinstance(value, list) else relative_to(root, value)

    content = {
        key: [{k: (rel(v) if k in ("image", "label") else v) for k, v in item.items()} for item in items]
        for key, items in datalist.items()
    }
    target = write_json_atomic(content, output_json)
    logger.info("Wrote datalist '%s'.", target)
    return target
