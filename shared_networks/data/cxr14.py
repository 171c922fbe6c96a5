"""NIH ChestX-ray14 datalists: 14 findings, multi-label, patient-wise validation split.

The layout of the NIH download under a ``dataset_dir``::

    images/00000001_000.png ...                       (or the download's images_001/images/ ... images_012/images/)
    Data_Entry_2017.csv  (or Data_Entry_2017_v2020.csv; columns "Image Index", "Finding Labels", "Patient ID", ...)
    train_val_list.txt   test_list.txt                (one image name per line; the official patient-wise split)

"Finding Labels" holds '|'-separated findings; "No Finding" is all zeros. :func:`cxr14_datalist` gives
``training`` and ``validation`` (patients drawn with a seed from ``train_val_list.txt``, no patient on both sides),
``test`` (``test_list.txt``) and ``pretrain`` (the training images; never a validation or test image).

Command line (checks every file, then writes the datalist JSON)::

    python -m shared_networks.cli.prepare cxr14 --dataset_dir DIR --output_json FILE [--val_fraction 0.1] [--seed 0]

(with ``--output_dir STORE --cache_size 224``, also every listed image pre-processed once: :mod:`.prepared`).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared_networks.data.files import (
    Issues,
    check_split_lists,
    load_datalist_file,
    raise_or_collect,
    read_text,
)
from shared_networks.data.pretrain import pretrain_extra_flag
from shared_networks.data.readers import is_dicom_file
from shared_networks.utils.files import write_json_atomic
from shared_networks.utils.paths import as_dir

__all__ = [
    "CSV_NAMES",
    "CXR14_FINDINGS",
    "MISSING_POLICIES",
    "check_split_files",
    "cxr14_datalist",
    "find_cxr14_images",
    "find_labels_csv",
    "list_xray_inputs",
    "read_cxr14_labels",
    "read_split_list",
    "write_cxr14_datalist",
]

logger = logging.getLogger(__name__)

CXR14_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
"""The 14 findings in the standard order (Wang et al., CVPR 2017; CheXNet), the order of the label vectors."""

NO_FINDING = "No Finding"
CSV_NAMES: tuple[str, ...] = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
"""Label file names looked for, in this order (the 2020 re-release first)."""
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
MISSING_POLICIES: tuple[str, ...] = ("error", "skip")
LIST_KEYS: tuple[str, ...] = ("training", "validation", "test", "pretrain")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
_SHOWN = 10  # names shown in an error message

PathLike = str | os.PathLike[str]


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def find_cxr14_images(dataset_dir: PathLike) -> dict[str, Path]:
    """Image name -> path for every PNG under ``images/`` and ``images_*/images/`` (the NIH download's folders).

    Raises:
        FileNotFoundError: if ``dataset_dir`` or every image folder is missing.
        ValueError: if one image name is found in two folders.
    """
    root = as_dir(dataset_dir, "ChestX-ray14 dataset folder")
    folders = [root / "images"] + sorted(p / "images" for p in root.glob("images_*") if p.is_dir())
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        raise FileNotFoundError(
            f"no image folder in '{root}': expected images/ or images_001/images/ ... (NIH layout)."
        )
    found: dict[str, Path] = {}
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.lower().endswith(".png") or not entry.is_file():
                    continue
                if entry.name in found:
                    raise ValueError(f"image {entry.name} is in two folders: '{found[entry.name]}' and '{entry.path}'.")
                found[entry.name] = Path(entry.path)
    return found


def read_cxr14_labels(csv_path: PathLike, issues: Issues | None = None) -> dict[str, tuple[list[float], str]]:
    """Image name -> (14 labels in :data:`CXR14_FINDINGS` order, patient ID) from a ``Data_Entry_2017*.csv``.

    Args:
        csv_path: the label file.
        issues: ``None`` to raise at the first bad row; a list to append every bad row to as ``(path, exception)``
            and leave those rows out (:mod:`shared_networks.validation`).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: naming the file (and row) for missing columns, an unknown finding, "No Finding" combined with a
            finding, an empty label, or an image listed twice.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"ChestX-ray14 label file '{path}' does not exist.")
    index = {name: i for i, name in enumerate(CXR14_FINDINGS)}
    entries: dict[str, tuple[list[float], str]] = {}
    text = read_text(path, "ChestX-ray14 label file")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        needed = ("Image Index", "Finding Labels", "Patient ID")
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"'{path}' lacks the column(s) {missing}; found {reader.fieldnames}.")
        for row_number, row in enumerate(reader, start=2):
            name = (row["Image Index"] or "").strip()
            findings = [s.strip() for s in (row["Finding Labels"] or "").split("|") if s.strip()]
            where = f"'{path}' row {row_number} ({name or 'no image name'})"
            patient = (row["Patient ID"] or "").strip()
            problem = None
            if not name or not findings:
                problem = "empty image name or finding labels"
            elif not patient:
                problem = "empty Patient ID (the validation split is drawn by patient)"
            elif name in entries:
                problem = "image listed twice"
            elif NO_FINDING in findings and len(findings) > 1:
                problem = f"'{NO_FINDING}' together with findings {findings}"
            unknown = [f for f in findings if f != NO_FINDING and f not in index]
            if problem is None and unknown:
                problem = f"unknown finding {unknown[0]!r}; expected {list(CXR14_FINDINGS)}"
            if problem is not None:
                raise_or_collect(issues, path, ValueError(f"{where}: {problem}."))
                continue
            label = [0.0] * len(CXR14_FINDINGS)
            for finding in findings:
                if finding != NO_FINDING:
                    label[index[finding]] = 1.0
            entries[name] = (label, patient)
    except csv.Error as err:  # a NUL byte, an unterminated quote ...
        raise ValueError(f"'{path}' is not a readable CSV file: {err}.") from err
    return entries


def read_split_list(path: Path) -> list[str]:
    """Image names of a split file (``train_val_list.txt``, ``test_list.txt``); raises naming a duplicate or absence."""
    if not path.is_file():
        raise FileNotFoundError(
            f"ChestX-ray14 split file '{path}' does not exist (NIH layout: {TRAIN_VAL_LIST}, "
            f"{TEST_LIST} beside the images)."
        )
    names = [line.strip() for line in read_text(path, "ChestX-ray14 split file").splitlines() if line.strip()]
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"'{path}' lists images more than once: {_some(duplicates)}.")
    return names


def check_split_files(
    root: Path,
    train_val: Sequence[str] | None,
    test: Sequence[str] | None,
    labels: dict[str, tuple[list[float], str]] | None = None,
    issues: Issues | None = None,
) -> None:
    """Check the official split: ``train_val_list.txt`` and ``test_list.txt`` each list an image, share none, and
    (with ``labels``) no patient has images in both, which would put test patients into training.

    Args:
        root: the NIH folder.
        train_val: names of ``train_val_list.txt`` (``None``: unreadable, not checked).
        test: names of ``test_list.txt`` (``None``: unreadable, not checked).
        labels: :func:`read_cxr14_labels` of the folder, for the patients (names without a row are not counted).
        issues: ``None`` to raise at the first problem; a list to append every problem to.

    Raises:
        ValueError: naming the split file(s) and the images or patients.
    """
    files = {root / TRAIN_VAL_LIST: train_val, root / TEST_LIST: test}
    lists = [(f"'{path}'", path, names) for path, names in files.items() if names is not None]
    check_split_lists(lists, {what for what, _, _ in lists}, issues)
    if labels is None or train_val is None or test is None:
        return
    both = set(train_val) & set(test)  # reported above
    patients = {labels[n][1] for n in train_val if n in labels and n not in both}
    shared = sorted(patients & {labels[n][1] for n in test if n in labels and n not in both})
    if shared:
        raise_or_collect(
            issues,
            root / TEST_LIST,
            ValueError(
                f"{len(shared)} patient(s) have images in both '{root / TRAIN_VAL_LIST}' and '{root / TEST_LIST}': "
                f"{_some(shared)}; the split must be patient-wise (a test patient seen in training inflates the test "
                "scores)."
            ),
        )


def find_labels_csv(root: Path, labels_csv: PathLike | None) -> Path:
    """``labels_csv`` (relative to ``root`` or absolute), or the first of :data:`CSV_NAMES` in ``root``."""
    if labels_csv is not None:
        path = Path(labels_csv)
        return path if path.is_absolute() else root / path
    for name in CSV_NAMES:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"no label file in '{root}': expected one of {list(CSV_NAMES)}.")


def _items(
    names: Iterable[str], labels: dict[str, tuple[list[float], str]], images: dict[str, Path]
) -> list[dict[str, object]]:
    return [{"image": str(images[n]), "label": labels[n][0], "patient": labels[n][1]} for n in names]


def _check_disjoint(source: str, datalist: dict[str, list[dict]]) -> None:
    """Raise ValueError when an image is in two of training/validation/test or a patient in training and validation."""
    seen: dict[str, str] = {}
    for key in ("training", "validation", "test"):
        for item in datalist[key]:
            if item["image"] in seen:
                raise ValueError(f"{source}: image '{item['image']}' is in both '{seen[item['image']]}' and '{key}'.")
            seen[item["image"]] = key
    patients = {i.get("patient") for i in datalist["training"]} & {i.get("patient") for i in datalist["validation"]}
    patients.discard(None)
    if patients:
        raise ValueError(f"{source}: patient(s) {_some(sorted(patients))} in both training and validation.")
    evaluation = {i["image"] for i in datalist["validation"] + datalist["test"]}
    leaked = [i["image"] for i in datalist["pretrain"] if i["image"] in evaluation]
    if leaked:
        raise ValueError(f"{source}: pre-training images from validation/test: {_some(leaked)}.")


def _load_datalist_file(
    root: Path, datalist_file: PathLike, pretrain_extra_images: bool = False
) -> dict[str, list[dict]]:
    """A datalist JSON (:func:`~shared_networks.data.files.load_datalist_file`): each labelled item holds the 14
    findings as its ``label``; relative image paths are under ``root``."""

    def parse(source: Path, key: str, entries: Any, labelled: bool) -> list[dict]:
        if not isinstance(entries, list):
            raise ValueError(f"datalist file '{source}': '{key}' must be a list, got {type(entries).__name__}.")
        items = []
        for item in entries:
            if not isinstance(item, dict) or "image" not in item or (labelled and "label" not in item):
                needs = "'image' and 'label'" if labelled else "'image'"
                raise ValueError(f"datalist file '{source}': every '{key}' item needs {needs}, got {item!r}.")
            image = Path(item["image"]).expanduser()
            item = {**item, "image": str(image if image.is_absolute() else root / image)}
            if labelled and (not isinstance(item["label"], list) or len(item["label"]) != len(CXR14_FINDINGS)):
                raise ValueError(f"datalist file '{source}': the label of {item['image']} is not 14 values.")
            items.append(item)
        return items

    def check(source: Path, datalist: dict[str, list[dict]]) -> None:
        missing = [i["image"] for key in LIST_KEYS for i in datalist[key] if not Path(i["image"]).is_file()]
        missing = list(dict.fromkeys(missing))
        if missing:
            n = len(missing)
            raise FileNotFoundError(f"datalist file '{source}' lists {n} missing image(s): {_some(missing)}.")
        _check_disjoint(f"datalist file '{source}'", datalist)

    return load_datalist_file(datalist_file, parse, check, pretrain_extra_images)


def _check_arguments(val_fraction: float, num_val: int | None, missing: str) -> None:
    """Raise ``ValueError`` naming a bad argument of :func:`cxr14_datalist`."""
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {list(MISSING_POLICIES)}, got {missing!r}.")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}.")
    if num_val is not None and (isinstance(num_val, bool) or int(num_val) < 1):
        raise ValueError(f"num_val must be a positive number of patients, got {num_val!r}.")


def _on_disk(
    root: Path, train_val: list[str], test: list[str], images: dict[str, Path], missing: str
) -> tuple[list[str], list[str]]:
    """``(train_val, test)`` without the images absent from disk: ``missing="error"`` raises ``FileNotFoundError``
    naming them, ``"skip"`` leaves them out with a warning."""
    absent = [n for n in train_val + test if n not in images]
    if not absent:
        return train_val, test
    if missing == "error":
        raise FileNotFoundError(
            f"{len(absent)} image(s) listed in {TRAIN_VAL_LIST}/{TEST_LIST} of '{root}' are not on disk "
            f"(images/ or images_*/images/): {_some(absent)}. Complete the download, or pass missing='skip' "
            "(--missing_images skip) to leave them out."
        )
    logger.warning(
        "%d of %d listed images are not on disk and are left out (missing='skip'): %s",
        len(absent),
        len(train_val) + len(test),
        _some(absent),
    )
    gone = set(absent)
    return [n for n in train_val if n not in gone], [n for n in test if n not in gone]


def _validation_patients(
    root: Path,
    train_val: list[str],
    labels: dict[str, tuple[list[float], str]],
    val_fraction: float,
    num_val: int | None,
    seed: int,
) -> set[str]:
    """The validation patients: ``num_val`` (default ``max(1, round(val_fraction * n_patients))``) of the patients of
    ``train_val``, drawn with ``seed``; at least one patient is left for training (else ``ValueError``)."""
    patients = sorted({labels[n][1] for n in train_val})
    if len(patients) < 2:
        raise ValueError(
            f"'{root / TRAIN_VAL_LIST}' holds {len(patients)} patient(s) on disk; need at least 2 "
            "(one for training, one for validation)."
        )
    n_val = int(num_val) if num_val is not None else max(1, round(float(val_fraction) * len(patients)))
    if n_val >= len(patients):
        raise ValueError(f"num_val {n_val} leaves no training patient out of {len(patients)}.")
    order = np.random.default_rng(int(seed)).permutation(len(patients))
    return {patients[i] for i in order[:n_val]}


def cxr14_datalist(
    dataset_dir: PathLike,
    val_fraction: float = 0.1,
    seed: int = 0,
    num_val: int | None = None,
    missing: str = "error",
    labels_csv: PathLike | None = None,
    datalist_file: PathLike | None = None,
    pretrain_extra_images: bool = False,
) -> dict[str, list[dict]]:
    """The ChestX-ray14 datalist: ``training``/``validation``/``test`` lists of labelled items and ``pretrain``.

    The patients of ``train_val_list.txt`` are shuffled with ``numpy.random.default_rng(seed)``; the first
    ``num_val`` (default ``max(1, round(val_fraction * n_patients))``) give the validation images, the others the
    training images, so no patient is on both sides. ``test`` is ``test_list.txt`` (the official split, itself
    patient-wise: both lists must hold images, and an image or a patient in both lists is an error,
    :func:`check_split_files`). ``pretrain`` is the training images: the NIH layout holds no unlabelled image, so
    ``pretrain_extra_images`` adds images only from a ``datalist_file``'s ``pretrain`` list.

    Args:
        dataset_dir: folder in the NIH layout (see the module docstring).
        val_fraction: fraction of the train_val patients used for validation, in (0, 1).
        seed: seed of the patient shuffle.
        num_val: number of validation patients; overrides ``val_fraction``.
        missing: images listed in the split files but absent from disk: ``"error"`` raises FileNotFoundError
            naming them; ``"skip"`` leaves them out with a logged warning (for a partial download).
        labels_csv: label file (relative to ``dataset_dir`` or absolute); default: the first of :data:`CSV_NAMES`.
        datalist_file: a JSON datalist to load instead (keys ``training``, ``validation``, ``test``, ``pretrain``;
            items ``{"image", "label"}``, paths relative to ``dataset_dir`` or absolute).
        pretrain_extra_images: add the images of the datalist file's ``pretrain`` list that are not training images
            (default: the training images alone, as the method pre-trains on the target training set only).

    Returns:
        ``{"training", "validation", "test", "pretrain"}``: items ``{"image": path, "label": [14 floats],
        "patient": id}`` (pretrain items have the same keys); the same inputs give the same output.

    Raises:
        ValueError: bad arguments, malformed label/split files, an empty split file, an image or a patient in both
            split files, images absent from the label file, fewer than two train_val patients.
        FileNotFoundError: missing folder/files, or listed images missing on disk with ``missing="error"``.
    """
    _check_arguments(val_fraction, num_val, missing)
    extra_images = pretrain_extra_flag(pretrain_extra_images)
    root = as_dir(dataset_dir, "ChestX-ray14 dataset folder")
    if datalist_file is not None:
        logger.info("Loading ChestX-ray14 datalist '%s'.", datalist_file)
        return _load_datalist_file(root, datalist_file, extra_images)

    csv_path = find_labels_csv(root, labels_csv)
    labels = read_cxr14_labels(csv_path)
    train_val, test = read_split_list(root / TRAIN_VAL_LIST), read_split_list(root / TEST_LIST)
    unlabelled = [n for n in train_val + test if n not in labels]
    if unlabelled:
        raise ValueError(f"{len(unlabelled)} listed image(s) have no row in '{csv_path}': {_some(unlabelled)}.")
    check_split_files(root, train_val, test, labels)
    images = find_cxr14_images(root)
    train_val, test = _on_disk(root, train_val, test, images, missing)
    val_patients = _validation_patients(root, train_val, labels, val_fraction, num_val, seed)
    training = _items([n for n in train_val if labels[n][1] not in val_patients], labels, images)
    validation = _items([n for n in train_val if labels[n][1] in val_patients], labels, images)
    datalist = {
        "training": training,
        "validation": validation,
        "test": _items(test, labels, images),
        "pretrain": [dict(item) for item in training],
    }
    _check_disjoint(f"ChestX-ray14 split of '{root}'", datalist)
    logger.info(
        "ChestX-ray14 (%s): %d training, %d validation (%d patients, seed %d), %d test images.",
        csv_path.name,
        len(training),
        len(validation),
        len(val_patients),
        int(seed),
        len(datalist["test"]),
    )
    return datalist


def write_cxr14_datalist(
    dataset_dir: PathLike,
    output_json: PathLike,
    val_fraction: float = 0.1,
    seed: int = 0,
    num_val: int | None = None,
    missing: str = "error",
    labels_csv: PathLike | None = None,
) -> Path:
    """Write the ChestX-ray14 datalist JSON (training/validation/test/pretrain) of a folder in the NIH layout.

    The NIH layout: images/00000001_000.png ... (or the download's images_001/images/ ... images_012/images/),
    Data_Entry_2017.csv or Data_Entry_2017_v2020.csv (columns "Image Index", "Finding Labels", "Patient ID"; findings
    separated by '|', "No Finding" for none), train_val_list.txt and test_list.txt (one image name per line, the
    official patient-wise split). test is test_list.txt; pretrain is the training images.
    Image paths under the dataset folder are written relative to it; the file is written atomically. The
    arguments are those of cxr14_datalist: the validation split is val_fraction of the train_val_list.txt
    patients (or num_val patients), drawn with seed; missing="skip" leaves out listed images absent from disk.

    The files are not checked here; ``python -m shared_networks.cli.prepare`` checks them first
    (:mod:`shared_networks.validation`).

    Args:
        dataset_dir: folder in the NIH layout.
        output_json: JSON file to write.
        val_fraction: fraction of train_val patients for validation.
        seed: seed of the patient shuffle.
        num_val: number of validation patients; overrides val_fraction.
        missing: "error" or "skip" for listed images absent from disk.
        labels_csv: label file; default Data_Entry_2017_v2020.csv or Data_Entry_2017.csv.

    Returns:
        The absolute path of the written file.
    """
    datalist = cxr14_datalist(dataset_dir, val_fraction, seed, num_val, missing, labels_csv)
    root = Path(dataset_dir).expanduser().resolve()

    def rel(value: str) -> str:
        path = Path(value)
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else value

    content = {key: [{**item, "image": rel(item["image"])} for item in items] for key, items in datalist.items()}
    target = write_json_atomic(content, output_json)
    logger.info("Wrote ChestX-ray14 datalist '%s'.", target)
    return target


def list_xray_inputs(path: PathLike) -> list[str]:
    """Images to run inference on: ``path`` itself (a PNG/JPEG or a single-file DICOM), or those directly in a folder.

    DICOM files are recognised by a ``.dcm`` suffix or the ``DICM`` preamble. Results are sorted by name.

    Raises:
        FileNotFoundError: if ``path`` does not exist or a folder holds no image.
        ValueError: if ``path`` is a file of another kind.
    """
    p = Path(path).expanduser()
    if p.is_file():
        if not p.name.lower().endswith(IMAGE_SUFFIXES) and not is_dicom_file(p):
            raise ValueError(f"{p} is not a supported image ({', '.join(IMAGE_SUFFIXES)} or DICOM).")
        return [str(p)]
    if not p.is_dir():
        raise FileNotFoundError(f"inference input {p} does not exist.")
    found = [
        str(c)
        for c in sorted(p.iterdir())
        if c.is_file() and (c.name.lower().endswith(IMAGE_SUFFIXES) or is_dicom_file(c))
    ]
    if not found:
        raise FileNotFoundError(f"no image in {p}: expected {', '.join(IMAGE_SUFFIXES)} or DICOM files.")
    return found
