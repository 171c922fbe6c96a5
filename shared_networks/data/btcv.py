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

Modules: :mod:`~shared_networks.data.btcv_layouts` (the layouts, the cases found in them, ``dataset_0.json``),
:mod:`~shared_networks.data.btcv_splits` (the seeded and TransUNet splits) and this one (datalist files, the datalist).
Their public names are importable from here.

Command line (checks every file, then writes the datalist JSON)::

    python -m shared_networks.cli.prepare btcv --dataset_dir DIR --output_json FILE [--split transunet] [--seed 0]
        [--pretrain_extra_images true]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared_networks.data.btcv_layouts import (
    DATASET_JSON_NAME,
    LAYOUT_HELP,
    NIFTI_SUFFIXES,
    PathLike,
    dataset_json_lists,
    find_btcv_cases,
)
from shared_networks.data.btcv_splits import (
    SPLITS,
    TRANSUNET_TEST_CASES,
    check_split_arguments,
    seeded_split,
    transunet_split,
)
from shared_networks.data.files import check_disjoint, load_datalist_file, nifti_stem, relative_to, resolve_path
from shared_networks.data.pretrain import pretrain_extra_flag, pretrain_items, select_pretrain
from shared_networks.utils.files import write_json_atomic
from shared_networks.utils.paths import as_dir

__all__ = [
    "BTCV_LABELS",
    "DATASET_JSON_NAME",
    "NIFTI_SUFFIXES",
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

LIST_KEYS: tuple[str, ...] = ("training", "validation", "test", "pretrain")
Items = list[dict[str, str]]
SplitLists = tuple[Items, Items, Items, Items]  # training, validation, test, unlabelled


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


def _split_cases(
    root: Path, split: str, seed: int, val_fraction: float, test_fraction: float, num_val: int | None
) -> SplitLists:
    """The cases of ``root`` split by ``split`` (see :func:`btcv_datalist`).

    Returns:
        ``(training, validation, test, unlabelled)``; ``unlabelled`` adds, for ``dataset_json``, the existing images of
        the file's ``test`` list.
    """
    labelled, unlabelled = find_btcv_cases(root)
    if split == "seeded":
        training, validation, test = seeded_split(
            labelled, int(seed), float(val_fraction), float(test_fraction), num_val
        )
    elif split == "transunet":
        training, validation, test = transunet_split(labelled, int(seed), float(val_fraction), num_val)
    else:
        training, validation, unlabelled = _dataset_json_split(root, unlabelled)
        test = []
    return training, validation, test, unlabelled


def _datalist(root: Path, split: str, lists: SplitLists, extra_images: bool) -> dict[str, list[dict[str, str]]]:
    """The split's lists with the ``pretrain`` list: the training images, and with ``extra_images`` the unlabelled
    images that are not validation or test images; checked disjoint."""
    training, validation, test, unlabelled = lists
    evaluation = {item["image"] for item in validation + test}
    datalist = {
        "training": training,
        "validation": validation,
        "test": test,
        "pretrain": select_pretrain(
            training,
            [i for i in unlabelled if i["image"] not in evaluation],
            extra_images,
            f"BTCV '{root}'",
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
    check_split_arguments(split, seed, val_fraction, test_fraction, num_val)
    extra_images = pretrain_extra_flag(pretrain_extra_images)
    if datalist_file is not None:
        root = Path(dataset_dir).expanduser().resolve()
        logger.info("Loading BTCV datalist '%s' (split=%r is ignored).", datalist_file, split)
        return _load_datalist_file(root, datalist_file, extra_images, check_files)

    root = as_dir(dataset_dir, "BTCV dataset folder", LAYOUT_HELP)
    lists = _split_cases(root, split, seed, val_fraction, test_fraction, num_val)
    return _datalist(root, split, lists, extra_images)


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
