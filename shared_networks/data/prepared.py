"""Chest radiographs pre-processed once into a compact store, which training reads instead of the full-size PNGs.

Pre-training and fine-tuning on ChestX-ray14 spend about 21 ms per image per core on the deterministic pre-processing
of a 1024^2 PNG (decoding, grey levels, area resize) in every epoch. :func:`write_cxr14_store` runs that
pre-processing once for every image of the NIH split and writes the result at the training size::

    python -m shared_networks.cli.prepare cxr14 --dataset_dir DIR --output_dir STORE --cache_size 224

The store is one folder:

* ``images.npy``: ``(N, 1, S, S)`` ``uint8`` (``uint16`` when a source image is 16-bit), read memory-mapped; row ``i``
  is image ``i`` in [0, 1] (after :data:`STEPS`, before the intensity normalisation) times 255 (65535), rounded;
* ``index.json``: the format, ``cache_size`` S, the type, the pre-processing, the data set folder and per row the
  image name, the source file's size in bytes and its modification time (ns), by which a changed source is found.

A bundle config reads it with ``prepared_dir`` (:func:`prepared_transforms`): the loading steps of
``deterministic_transforms`` are replaced by :class:`LoadPreparedRadiographd`, which gives the same ``(1, S, S)``
float32 image within the stored type's precision (half a step: 0.5/255 for ``uint8``) and keeps the PNG's path as the
file name of error messages.

The store is written under temporary names and renamed when complete (a failure leaves no half-written
``images.npy``, and the old store is refused until the new one is complete); an interrupted run continues from the
last flushed row when run again with the same images and settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform, Resized, SpatialPadd

from shared_networks.data.cxr14 import TEST_LIST, TRAIN_VAL_LIST, _on_disk, find_cxr14_images, read_split_list
from shared_networks.data.loading import CheckedLoadImaged, ImageReadError
from shared_networks.data.radiographs import CheckedPILReader, ToGreyd
from shared_networks.utils.files import atomic_write_text
from shared_networks.utils.paths import as_dir

__all__ = [
    "IMAGES_FILE",
    "INDEX_FILE",
    "STEPS",
    "LoadPreparedRadiographd",
    "PreparedRadiographs",
    "check_prepared_images",
    "prepared_transforms",
    "radiograph_steps",
    "write_cxr14_store",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

IMAGES_FILE = "images.npy"
INDEX_FILE = "index.json"
FORMAT = "shared_networks.prepared_radiographs"
VERSION = 1
STEPS: tuple[str, ...] = ("CheckedLoadImaged", "ToGreyd", "Resized", "SpatialPadd")
"""The deterministic steps a store holds (the bundles' ``deterministic_transforms`` up to the normalisation)."""
DTYPES: dict[str, int] = {"uint8": 255, "uint16": 65535}
"""Stored types and their full-scale value (the stored value divided by it gives [0, 1])."""
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_PARTIAL = IMAGES_FILE + ".partial"
_PROGRESS = "progress.json.partial"
_FLUSH_ROWS = 2048  # rows between two flushes of a resumable point
_SHOWN = 10


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def radiograph_steps(size: int, key: str = "image") -> list:
    """The bundles' deterministic loading steps (:data:`STEPS`): any PNG -> ``(1, size, size)`` float32 in [0, 1],
    longest side ``size`` by area interpolation, zero padding (as ``deterministic_transforms`` of the chest X-ray
    bundle's ``train.yaml``, which :func:`prepared_transforms` checks)."""
    return [
        CheckedLoadImaged(key, reader=CheckedPILReader, image_only=True, ensure_channel_first=True, dtype=None),
        ToGreyd(key),
        Resized(key, spatial_size=size, size_mode="longest", mode="area"),
        SpatialPadd(key, spatial_size=[size, size]),
    ]


def _check_size(cache_size: Any) -> int:
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
        raise ValueError(f"cache_size must be a positive whole number of pixels, got {cache_size!r}.")
    return cache_size


def _source_record(path: Path) -> list[int]:
    stat = path.stat()
    return [int(stat.st_size), int(stat.st_mtime_ns)]


def _store_dtype(paths: Iterable[Path], dtype: str) -> str:
    """``dtype``, or for ``"auto"`` ``uint16`` when an image is 16-bit (PIL header), else ``uint8``."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {list(DTYPES)}, got {dtype!r}.")
        return dtype
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as image:
                mode = image.mode
        except Exception as err:  # not an image PIL knows, unreadable
            raise ImageReadError.from_error(path, err, "image") from err
        if mode in SIXTEEN_BIT_MODES:
            return "uint16"
    return "uint8"


# the worker side: one pipeline per process and size
_pipelines: dict[int, Compose] = {}


def _init_worker(size: int) -> None:
    torch.set_num_threads(1)
    _pipelines.setdefault(size, Compose(radiograph_steps(size)))


def _prepare_one(task: tuple[str, int, str]) -> np.ndarray:
    """One image -> its stored row ``(1, S, S)``; any error names the file."""
    path, size, dtype = task
    if size not in _pipelines:
        _pipelines[size] = Compose(radiograph_steps(size))
    try:
        image = _pipelines[size]({"image": path})["image"]  # (1, S, S) float32 in [0, 1]
    except ImageReadError:
        raise
    except Exception as err:  # ToGrey's refusals, a resize of a degenerate image ...
        raise ImageReadError.from_error(path, err, "image") from err
    x = torch.as_tensor(image).numpy()
    if x.shape != (1, size, size):
        raise ImageReadError(f"'{path}': pre-processed to shape {x.shape}, expected (1, {size}, {size}).", path)
    full = DTYPES[dtype]
    return np.clip(np.rint(x.astype(np.float64) * full), 0, full).astype(dtype)


def _digest(header: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(header, sort_keys=True).encode("utf-8")).hexdigest()


def _index_text(header: Mapping[str, Any]) -> str:
    """The index as JSON: the settings indented, one line per image row."""
    head = {k: v for k, v in header.items() if k != "images"}
    rows = ",\n".join("        " + json.dumps(row) for row in header["images"])
    return json.dumps(head, indent=4)[:-2] + ',\n    "images": [\n' + rows + "\n    ]\n}\n"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _store_is_current(out: Path, header: Mapping[str, Any]) -> bool:
    index = _read_json(out / INDEX_FILE)
    if index is None or index != header or not (out / IMAGES_FILE).is_file():
        return False
    try:
        array = np.load(out / IMAGES_FILE, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return list(array.shape) == header["shape"] and str(array.dtype) == header["dtype"]


def write_cxr14_store(
    dataset_dir: PathLike,
    output_dir: PathLike,
    cache_size: int,
    dtype: str = "auto",
    missing: str = "error",
    num_workers: int = 1,
) -> Path:
    """Write the prepared store (every image of train_val_list.txt and test_list.txt pre-processed once at
    cache_size x cache_size, shared_networks.data.prepared), which workflows read with --prepared_dir.

    Args:
        dataset_dir: folder in the NIH layout.
        output_dir: folder of the store (created; its parent must exist): images.npy and index.json.
        cache_size: the stored side S in pixels: the img_size of the workflows that read the store.
        dtype: "uint8", "uint16", or "auto": uint16 when one listed image is 16-bit (its PIL header), else uint8.
            The pipeline scales 8-bit images by 1/255 and 16-bit ones by 1/65535; uint8 keeps an 8-bit source's
            precision (rounding the resized values by at most 0.5/255), while a 16-bit source would lose its low 8 bits.
        missing: "error" or "skip" for listed images absent from disk (as the datalist).
        num_workers: processes pre-processing the images (1: this process).

    Returns:
        The absolute path of ``output_dir``. A store already written from the same files with the same settings is
        kept as it is.

    Raises:
        ImageReadError: naming an image that cannot be read or pre-processed (the rows done so far are kept for the
            next run).
        ValueError, FileNotFoundError: bad arguments, split files or a missing dataset folder or image.
    """
    size = _check_size(cache_size)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive whole number, got {num_workers!r}.")
    root = as_dir(dataset_dir, "ChestX-ray14 dataset folder").resolve()
    out = Path(output_dir).expanduser().absolute()
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output_dir '{out}': the folder '{out.parent}' does not exist; create it first.")
    train_val, test = read_split_list(root / TRAIN_VAL_LIST), read_split_list(root / TEST_LIST)
    images = find_cxr14_images(root)
    train_val, test = _on_disk(root, train_val, test, images, missing)
    names = list(dict.fromkeys(train_val + test))
    paths = [images[n] for n in names]
    stored = _store_dtype(paths, dtype)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "cache_size": size,
        "dtype": stored,
        "shape": [len(names), 1, size, size],
        "preprocessing": list(STEPS),
        "dataset_dir": str(root),
        "images": [[n, *_source_record(p)] for n, p in zip(names, paths, strict=True)],
    }
    out.mkdir(exist_ok=True)
    if _store_is_current(out, header):
        logger.info("Prepared store '%s' is up to date (%d images, %d^2 %s).", out, len(names), size, stored)
        return out

    partial, progress = out / _PARTIAL, out / _PROGRESS
    digest = _digest(header)
    array, start = _open_partial(out, header, digest)

    def flush(rows_done: int) -> None:
        array.flush()
        atomic_write_text(progress, json.dumps({"digest": digest, "rows_done": rows_done}))

    _fill_rows(array, paths, start, size, stored, num_workers, flush)
    array.flush()
    array = None  # the mapping closed before the rename
    # the old index first: an images.npy without its index is refused, never read with another store's index
    (out / INDEX_FILE).unlink(missing_ok=True)
    os.replace(partial, out / IMAGES_FILE)
    atomic_write_text(out / INDEX_FILE, _index_text(header))
    progress.unlink(missing_ok=True)
    nbytes = int(np.prod(header["shape"])) * np.dtype(stored).itemsize
    logger.info(
        "Wrote the prepared store '%s': %d images at %d^2 %s, %.2f GB (%d bytes per image).",
        out,
        len(names),
        size,
        stored,
        nbytes / 1e9,
        nbytes // max(1, len(names)),
    )
    return out


def _open_partial(out: Path, header: Mapping[str, Any], digest: str) -> tuple[np.memmap, int]:
    """The partial array of a store being written and the first row to write: an interrupted run's array when it was
    written for the same ``header`` (``digest``), else a new one."""
    partial, progress = out / _PARTIAL, out / _PROGRESS
    state = _read_json(progress)
    if state is not None and state.get("digest") == digest and partial.is_file():
        array = np.lib.format.open_memmap(partial, mode="r+")
        if list(array.shape) == header["shape"] and str(array.dtype) == header["dtype"]:
            start = int(state.get("rows_done", 0))
            logger.info("Continuing the prepared store '%s' from row %d of %d.", out, start, header["shape"][0])
            return array, start
    partial.unlink(missing_ok=True)
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=header["dtype"], shape=tuple(header["shape"]))
    atomic_write_text(progress, json.dumps({"digest": digest, "rows_done": 0}))
    return array, 0


def _fill_rows(
    array: np.memmap,
    paths: Sequence[Path],
    start: int,
    size: int,
    stored: str,
    num_workers: int,
    flush: Any,
) -> None:
    """Rows ``start``.. of ``array`` from ``paths`` (in ``num_workers`` processes), flushed every
    :data:`_FLUSH_ROWS` rows and, when a row fails, up to the failing image (the next run continues there)."""
    tasks = [(str(p), size, stored) for p in paths[start:]]
    t0, done = time.perf_counter(), start
    executor = ProcessPoolExecutor(num_workers, initializer=_init_worker, initargs=(size,)) if num_workers > 1 else None
    try:
        rows = executor.map(_prepare_one, tasks, chunksize=16) if executor else map(_prepare_one, tasks)
        for row in rows:
            array[done] = row
            done += 1
            if (done - start) % _FLUSH_ROWS == 0:
                flush(done)
                rate = (done - start) / (time.perf_counter() - t0)
                logger.info("Prepared %d of %d images (%.0f images/s).", done, len(paths), rate)
    except BaseException:
        flush(done)
        raise
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)


class PreparedRadiographs:
    """A store of :func:`write_cxr14_store`: its index read at once, its images memory-mapped at the first read in
    each process (so that a loader worker maps the file itself instead of receiving a copy of it).

    Args:
        prepared_dir: the store's folder.

    Raises:
        FileNotFoundError: the folder, ``index.json`` or ``images.npy`` is missing (e.g. an unfinished ``prepare``).
        ValueError: naming the folder, when the index is not a store's or does not match ``images.npy``.
    """

    def __init__(self, prepared_dir: PathLike) -> None:
        self.folder = Path(prepared_dir).expanduser().absolute()
        where = f"prepared store '{self.folder}'"
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"{where} does not exist: write it with python -m shared_networks.cli.prepare cxr14."
            )
        for name in (INDEX_FILE, IMAGES_FILE):
            if not (self.folder / name).is_file():
                raise FileNotFoundError(
                    f"{where} has no {name}: it is incomplete (a prepare run that did not finish); run prepare again."
                )
        index = _read_json(self.folder / INDEX_FILE)
        if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
            raise ValueError(f"{where}: {INDEX_FILE} is not the index of a store of format {FORMAT} v{VERSION}.")
        self.cache_size = int(index["cache_size"])
        self.dtype = str(index["dtype"])
        self.full = DTYPES[self.dtype]
        self.shape = tuple(index["shape"])
        array = np.load(self.folder / IMAGES_FILE, mmap_mode="r")
        if array.shape != self.shape or str(array.dtype) != self.dtype:
            raise ValueError(
                f"{where}: {IMAGES_FILE} holds {array.shape} {array.dtype}, its index {self.shape} {self.dtype}; "
                "run prepare again."
            )
        self.rows = {name: (row, size, mtime) for row, (name, size, mtime) in enumerate(index["images"])}
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"PreparedRadiographs('{self.folder}', {len(self)} images at {self.cache_size}^2 {self.dtype})"

    @property
    def array(self) -> np.ndarray:
        """The images, ``(N, 1, S, S)``, memory-mapped read-only."""
        if self._array is None:
            self._array = np.load(self.folder / IMAGES_FILE, mmap_mode="r")
        return self._array

    def check_size(self, img_size: int | Sequence[int]) -> None:
        """Raise ``ValueError`` naming both sizes unless ``img_size`` is ``cache_size`` on every axis."""
        sizes = [int(img_size)] * 2 if isinstance(img_size, int) else [int(s) for s in img_size]
        if len(sizes) != 2 or any(s != self.cache_size for s in sizes):
            raise ValueError(
                f"prepared store '{self.folder}' holds {self.cache_size} x {self.cache_size} images (cache_size "
                f"{self.cache_size}), but img_size is {list(img_size) if not isinstance(img_size, int) else img_size}: "
                f"prepare a store with --cache_size {max(sizes)}, or set prepared_dir null to read the PNGs."
            )

    def problem(self, path: PathLike) -> str | None:
        """Why the stored row of image ``path`` cannot stand for it (absent, or the file changed), else ``None``."""
        name = Path(path).name
        if name not in self.rows:
            return f"'{path}' is not in the prepared store '{self.folder}'"
        _, size, mtime = self.rows[name]
        try:
            now = _source_record(Path(path))
        except OSError:
            return None  # the source is not needed to read the store
        if now != [size, mtime]:
            return (
                f"'{path}' changed since the prepared store '{self.folder}' was written (size, modification time "
                f"{now} against {[size, mtime]})"
            )
        return None

    def read(self, path: PathLike, check_source: bool = True) -> np.ndarray:
        """The stored ``(1, S, S)`` row of image ``path`` (looked up by file name), in the stored type.

        Raises:
            ValueError: naming the file and the store when it is absent from the store or changed since.
        """
        if check_source:
            problem = self.problem(path)
            if problem is not None:
                raise ValueError(f"{problem}: run python -m shared_networks.cli.prepare cxr14 again.")
        elif Path(path).name not in self.rows:
            raise ValueError(f"'{path}' is not in the prepared store '{self.folder}'.")
        return np.asarray(self.array[self.rows[Path(path).name][0]])


class LoadPreparedRadiographd(MapTransform):
    """In place of :data:`STEPS` (load, grey, resize, pad): each key's image path -> its ``(1, S, S)`` float32
    image in [0, 1] read from a prepared store, a ``MetaTensor`` whose ``filename_or_obj`` is the PNG's path.

    Args:
        keys: keys of the image paths.
        prepared_dir: the store (:func:`write_cxr14_store`).
        img_size: the workflow's image size; a store of another size is refused, naming both.
        check_source: refuse an image whose file is absent from the store or changed since it was written
            (its size or modification time; a ``stat`` per image).
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prepared_dir: PathLike,
        img_size: int | Sequence[int] | None = None,
        check_source: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.store = PreparedRadiographs(prepared_dir)
        if img_size is not None:
            self.store.check_size(img_size)
        self.check_source = bool(check_source)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            stored = self.store.read(path, self.check_source)
            image = torch.from_numpy(stored.astype(np.float32)) / self.store.full  # (1, S, S) in [0, 1]
            meta = {
                "filename_or_obj": path,
                "spatial_shape": np.asarray(image.shape[1:]),
                "original_channel_dim": float("nan"),
                "source": f"prepared {self.store.dtype}",
            }
            d[key] = MetaTensor(image, meta=meta)
        return d


def _is_off(prepared_dir: Any) -> bool:
    return prepared_dir is None or (isinstance(prepared_dir, str) and prepared_dir.strip().lower() in ("", "none"))


def prepared_transforms(
    transforms: Sequence[Any], prepared_dir: PathLike | None, img_size: int | Sequence[int], key: str = "image"
) -> list:
    """The deterministic transforms of a chest X-ray training workflow: ``transforms`` as they are when
    ``prepared_dir`` is ``None``, else with their loading steps (:data:`STEPS`, everything before the intensity
    normalisation) replaced by :class:`LoadPreparedRadiographd` on the store::

        dataset_transforms: $shared_networks.prepared_transforms(@deterministic_transforms, @prepared_dir, @img_size)

    Raises:
        ValueError: the loading steps are not :data:`STEPS` with the store's resize (longest side, area, to
            ``img_size``), or the store's size is not ``img_size`` (naming both).
        FileNotFoundError: the store is missing or incomplete.
    """
    transforms = list(transforms)
    if _is_off(prepared_dir):
        return transforms
    names = [type(t).__name__ for t in transforms]
    if "NormalizeIntensityd" not in names:
        raise ValueError(f"prepared_dir: the deterministic transforms {names} have no NormalizeIntensityd to keep.")
    first = names.index("NormalizeIntensityd")
    if names[:first] != list(STEPS):
        raise ValueError(
            f"prepared_dir '{prepared_dir}' holds the steps {list(STEPS)}, but the deterministic transforms before "
            f"the normalisation are {names[:first]}: set prepared_dir null to run them on the PNGs."
        )
    resizer = transforms[STEPS.index("Resized")].resizer
    if resizer.size_mode != "longest" or str(resizer.mode) != "area":
        raise ValueError(
            f"prepared_dir '{prepared_dir}' holds images resized by area to the longest side; the workflow's Resized "
            f"uses size_mode {resizer.size_mode!r}, mode {str(resizer.mode)!r}: set prepared_dir null."
        )
    return [LoadPreparedRadiographd(key, prepared_dir, img_size), *transforms[first:]]


def check_prepared_images(
    prepared_dir: PathLike | None, items: Sequence[Mapping[str, Any]], key: str = "image"
) -> None:
    """Before a workflow reads a store: every item's image is in it and unchanged since (a ``stat`` per file), so
    that a stale or incomplete store stops the run at once rather than at the first batch that meets it. Nothing is
    checked when ``prepared_dir`` is ``None``.

    Raises:
        ValueError: naming the store and the images absent from it or changed since it was written.
    """
    if _is_off(prepared_dir):
        return
    store = PreparedRadiographs(prepared_dir)
    problems = [p for p in (store.problem(item[key]) for item in items) if p is not None]
    if problems:
        raise ValueError(
            f"{len(problems)} of {len(items)} images cannot be read from the prepared store '{store.folder}': "
            f"{_some(problems)}. Run python -m shared_networks.cli.prepare cxr14 --output_dir '{store.folder}' "
            "again (it rewrites the store from the current files), or set prepared_dir null."
        )
    logger.info("Reading %d images from %r.", len(items), store)
