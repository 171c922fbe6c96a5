"""File helpers shared by the data-preparation modules: NIfTI names, datalist paths and JSON, atomic NIfTI writing."""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from shared_networks.data.pretrain import select_pretrain
from shared_networks.utils.files import new_file_mode

__all__ = [
    "NIFTI_SUFFIXES",
    "Issues",
    "check_disjoint",
    "check_split_lists",
    "is_nifti",
    "nifti_stem",
    "outside_root",
    "raise_or_collect",
    "read_json_object",
    "read_text",
    "relative_to",
    "resolve_path",
    "save_nifti",
    "split_file_lists",
]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")

PathLike = str | os.PathLike[str]


def is_nifti(path: Path) -> bool:
    """Whether ``path`` is a visible NIfTI file (``.nii`` or ``.nii.gz``)."""
    return path.is_file() and not path.name.startswith(".") and path.name.endswith(NIFTI_SUFFIXES)


def nifti_stem(path: PathLike) -> str:
    """File name without the NIfTI suffix (``img0001.nii.gz`` -> ``img0001``)."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def resolve_path(root: Path, value: str) -> Path:
    """Resolve a datalist path: absolute paths stay, relative ones are taken from ``root``; ``..`` is folded."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = root / path
    return Path(os.path.normpath(path))


def outside_root(root: PathLike, path: PathLike) -> Path | None:
    """Where ``path`` leads (``..`` and symbolic links resolved) when that is outside the folder ``root``; ``None``
    when it stays inside. Nothing is opened."""
    target = Path(os.path.realpath(path))
    return None if target.is_relative_to(os.path.realpath(root)) else target


def relative_to(root: Path, value: str) -> str:
    """``value`` relative to ``root`` (POSIX separators) when it lies under it, else unchanged."""
    path = Path(value)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else value


_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}


def read_text(path: PathLike, what: str = "text file") -> str:
    """The text of a UTF-8 file (a UTF-8 byte-order mark is accepted and dropped).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, its encoding problem and where it is, for a UTF-16/32 file (byte-order mark) or
            bytes that are not UTF-8 (e.g. a latin-1 or cp1252 export): "save it as UTF-8".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist.")
    raw = path.read_bytes()
    for bom in sorted(_BOMS, key=len, reverse=True):
        if raw.startswith(bom):
            raise ValueError(f"{what} '{path}' is {_BOMS[bom]} text (byte-order mark); save it as UTF-8.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{what} '{path}' is not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} (line {line}) "
            "is not valid UTF-8 (a latin-1 or Windows export?); save it as UTF-8."
        ) from None


def read_json_object(path: Path, what: str = "Datalist") -> dict[str, Any]:
    """Read a JSON object from ``path`` (UTF-8, a byte-order mark accepted).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file if it is not UTF-8, not valid JSON or does not hold a JSON object.
    """
    try:
        content = json.loads(read_text(path, what))
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} '{path}' is not valid JSON: {err}.") from err
    except RecursionError as err:
        raise ValueError(f"{what} '{path}' is nested too deeply to be a datalist.") from err
    if not isinstance(content, dict):
        raise ValueError(f"{what} '{path}' must hold a JSON object, got {type(content).__name__}.")
    return content


DATALIST_KEYS: tuple[str, ...] = ("training", "validation", "test", "pretrain")


def load_datalist_file(
    datalist_file: str | os.PathLike,
    parse: Callable[[Path, str, Any, bool], list[dict]],
    check: Callable[[Path, dict[str, list[dict]]], None],
    pretrain_extra_images: bool = False,
    pretrain_keys: Sequence[str] | None = None,
) -> dict[str, list[dict]]:
    """A user's datalist JSON, as every bundle reads it: lists ``training``, ``validation``, ``test`` (labelled) and
    ``pretrain`` (images only), no other key.

    A relative ``datalist_file`` is read from the current directory. Each list is parsed by the data set's
    ``parse(source, key, entries, labelled)``, then ``check(source, datalist)`` checks the items (files, headers, the
    lists disjoint) as the file wrote them. ``pretrain`` becomes the training images, plus the other images of the
    file's ``pretrain`` list when ``pretrain_extra_images`` is true (:func:`~shared_networks.data.pretrain.
    select_pretrain`).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file: not a JSON object, unknown keys, or what ``parse``/``check`` refuse.
    """
    source = Path(datalist_file).expanduser().resolve()
    if not source.is_file():
        raise FileNotFoundError(f"Datalist file '{source}' does not exist.")
    content = read_json_object(source)
    unknown = sorted(str(k) for k in set(content) - set(DATALIST_KEYS))
    if unknown:
        raise ValueError(
            f"Datalist file '{source}': unknown key(s) {unknown}; a datalist holds the lists {list(DATALIST_KEYS)}."
        )
    datalist = {key: parse(source, key, content.get(key, []), key != "pretrain") for key in DATALIST_KEYS}
    check(source, datalist)
    label = f"Datalist file '{source}'"
    datalist["pretrain"] = select_pretrain(
        datalist["training"], datalist["pretrain"], pretrain_extra_images, label, keys=pretrain_keys
    )
    return datalist


def check_disjoint(source: str, datalist: Mapping[str, Sequence[Mapping[str, str]]]) -> None:
    """Check that no image is in two of training/validation/test and that pretrain holds no evaluation image.

    Raises:
        ValueError: naming ``source``, the two lists and the shared image.
    """
    pairs = (
        ("training", "validation"),
        ("training", "test"),
        ("validation", "test"),
        ("pretrain", "validation"),
        ("pretrain", "test"),
    )
    for first, second in pairs:
        shared = sorted({i["image"] for i in datalist[first]} & {i["image"] for i in datalist[second]})
        if shared:
            raise ValueError(
                f"{source}: image '{shared[0]}' is in both '{first}' and '{second}'; the lists must be disjoint."
            )


_SHOWN = 10  # images named in one message


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def check_split_lists(
    lists: Sequence[tuple[str, Path, Sequence[str]]], required: Collection[str] = (), issues: Issues | None = None
) -> None:
    """Check the lists of a data set's split: a required list holds an image, no list holds an image twice, no image
    is in two lists.

    Args:
        lists: ``(what, file, images)`` per list: how messages name it (``"'/d/test_list.txt'"``, ``"the 'training'
            list of '/d/dataset_0.json'"``), the file that holds it, and its images (names or paths).
        required: the ``what`` of the lists that must not be empty.
        issues: ``None`` to raise at the first problem; a list to append every problem to (see
            :func:`raise_or_collect`).

    Raises:
        ValueError: naming the list(s) and the images.
    """
    for what, path, images in lists:
        if what in required and not images:
            raise_or_collect(issues, path, ValueError(f"{what} holds no image: a split list must not be empty."))
        seen: set[str] = set()
        twice = list(dict.fromkeys(i for i in images if i in seen or seen.add(i)))
        if twice:
            raise_or_collect(issues, path, ValueError(f"{what} lists images more than once: {_shown(twice)}."))
    for index, (what, _, images) in enumerate(lists):
        for other, path, others in lists[index + 1 :]:
            shared = sorted(set(images) & set(others))
            if shared:
                raise_or_collect(
                    issues,
                    path,
                    ValueError(f"{what} and {other} share images: {_shown(shared)}; the split lists must be disjoint."),
                )


def split_file_lists(
    source: Path,
    content: Mapping[str, Any],
    root: Path,
    labelled: Sequence[str],
    unlabelled: Sequence[str] = (),
    required: Collection[str] = (),
    issues: Issues | None = None,
) -> dict[str, list[dict[str, str]]]:
    """The file lists of a data set's own split file (BTCV ``dataset_0.json``, MSD ``dataset.json``), checked.

    Entries of the ``labelled`` keys are ``{"image": path, "label": path}`` objects, entries of the ``unlabelled`` keys
    image paths or ``{"image": path}`` objects; paths are relative to ``root`` or absolute; a string ``case`` is kept.
    An absent key is an empty list. The file describes its own data set, so every path must lead to a file inside
    ``root`` once ``..`` and symbolic links are resolved: a path leading elsewhere is refused, never read. The lists
    are checked with :func:`check_split_lists` (``required`` lists not empty, no image in two lists).

    Args:
        source: the split file, for messages.
        content: its JSON object.
        root: the data set folder.
        labelled: keys of the lists of labelled entries.
        unlabelled: keys of the lists of image-only entries.
        required: keys of the lists that must hold an entry.
        issues: ``None`` to raise at the first problem; a list to append every problem to and leave the bad entry out.

    Returns:
        ``{key: [{"image": abs_path, "label": abs_path, ("case": str)}]}`` (no ``label`` for unlabelled keys).

    Raises:
        ValueError: naming the file, the list and the entry: a list that is not a list, a malformed entry, a path that
            leads outside ``root``, an empty required list, an image in two lists.
    """
    lists: dict[str, list[dict[str, str]]] = {}
    parsed = []
    for key in (*labelled, *unlabelled):
        entries = content.get(key, [])
        lists[key] = []
        if not isinstance(entries, list):
            raise_or_collect(
                issues, source, ValueError(f"'{source}': '{key}' must be a list, got {type(entries).__name__}.")
            )
            continue
        parsed.append(key)
        for index, entry in enumerate(entries):
            entry = {"image": entry} if isinstance(entry, str) and key in unlabelled else entry
            fields = ("image", "label") if key in labelled else ("image",)
            if not isinstance(entry, dict) or not all(isinstance(entry.get(f), str) and entry[f] for f in fields):
                wanted = "an object with 'image' and 'label' paths" if key in labelled else "an image path"
                raise_or_collect(
                    issues, source, ValueError(f"'{source}': entry {index} of '{key}' must be {wanted}, got {entry!r}.")
                )
                continue
            item = {f: str(resolve_path(root, entry[f])) for f in fields}
            outside = [(f, target) for f in fields if (target := outside_root(root, item[f])) is not None]
            for field, target in outside:
                raise_or_collect(
                    issues,
                    source,
                    ValueError(
                        f"'{source}': entry {index} of '{key}' names the {field} '{entry[field]}', which leads "
                        f"to '{target}', outside the data set folder '{root}'; a data set's split file may name only "
                        "its own files."
                    ),
                )
            if outside:
                continue
            if isinstance(entry.get("case"), str) and entry["case"]:
                item["case"] = entry["case"]
            lists[key].append(item)
    empty = [key for key in required if key in parsed and not content.get(key)]  # entries refused above don't count
    check_split_lists(
        [(f"the '{key}' list of '{source}'", source, [i["image"] for i in lists[key]]) for key in parsed],
        {f"the '{key}' list of '{source}'" for key in empty},
        issues,
    )
    return lists


def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Save ``data`` as NIfTI (RAS affine, mm units) through a temporary file in the same folder."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(data.dtype)
    image.header.set_xyzt_units(xyz="mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".nii.gz", dir=path.parent)
    os.close(handle)
    try:
        nib.save(image, tmp_name)
        os.chmod(tmp_name, new_file_mode())  # mkstemp's 0600 -> what open() gives under the umask
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


Issues = list[tuple[str, Exception]]


def raise_or_collect(issues: Issues | None, path: PathLike, error: Exception) -> None:
    """Raise ``error``, or, when ``issues`` is a list, append ``(path, error)`` to it (to report every problem)."""
    if issues is None:
        raise error
    issues.append((str(path), error))
