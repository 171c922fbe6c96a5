"""Memory you can see before it is spent: the size of a ``CacheDataset``'s cache estimated from the image headers,
logged beside the memory available, and the share of the cases that fits a budget.

The 3D bundles give their datasets ``cache_rate: $shared_networks.cache_rate_for(...)``: it reads only the NIfTI
headers (no voxel data), estimates the bytes the cache will hold, logs the estimate and the memory available, and
returns the ``cache_rate`` to use:

- ``cache_rate: auto``: the share of the cases that fits ``cache_memory_fraction`` of the available memory,
  ``min(1, budget / estimate)``;
- a number: used as given when ``number * estimate`` fits in the available memory, refused with a ``ValueError``
  naming the estimate, the budget and the settings to change otherwise, before any image is read.

The estimate of one case, per cached key: the spatial shape after ``Spacingd`` (each header axis's extent, shape
times voxel size, divided by the target spacing of the world axis it maps to, rounded), times the channels the cache
holds for that key, times the size of the type the cache stores it in (``cache_dtypes``: float16 images and uint8
labels in the 3D bundles).

Several processes on one node (``torchrun``, ``LOCAL_WORLD_SIZE``) each hold their own cache: the budget of each is
its share of the node's. With a disk cache (``cache_dir``, :class:`shared_networks.MemoryThenDiskDataset`) the cases
that do not fit in memory are written there: their estimate is logged beside the disk's free space, and a disk too
small for them is refused before any image is read. Approximations, stated: the foreground crop (``CropForegroundd``)
depends on the voxels, which are not read: the estimate counts the whole resampled volume times ``crop_fraction``
(1.0, an upper bound, by default); the metadata a ``MetaTensor`` carries (a few KiB per case) is not counted.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = [
    "available_memory",
    "cache_rate_for",
    "check_disk_cache",
    "choose_cache_rate",
    "estimate_cache_bytes",
    "estimate_item_bytes",
    "local_processes",
    "resampled_shape",
]

logger = logging.getLogger(__name__)

GIB = 1024**3


def _gib(n: float) -> str:
    """``n`` bytes in GiB, or in MiB below 1 GiB."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 1024**2:.1f} MiB"


def available_memory() -> int | None:
    """Bytes of memory available to new allocations: ``psutil.virtual_memory().available`` where psutil is installed,
    else ``MemAvailable`` of ``/proc/meminfo``; None where neither is readable."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def local_processes() -> int:
    """Processes sharing this node's memory, each with its own cache: ``LOCAL_WORLD_SIZE`` (set by ``torchrun``), 1
    without it."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def resampled_shape(path: str | os.PathLike, pixdim: Sequence[float]) -> tuple[int, ...]:
    """The spatial shape of the image at ``path`` after ``Orientationd(RAS)`` and ``Spacingd(pixdim)``, from its
    header only: per world axis, the extent of the voxel axis that maps to it divided by ``pixdim`` of that axis."""
    img = nib.load(str(path))
    shape = img.header.get_data_shape()[:3]
    zooms = img.header.get_zooms()[:3]
    world_axis = nib.io_orientation(img.affine)[:, 0]  # voxel axis i -> world axis (R, A, S)
    out = [0, 0, 0]
    for i, (n, z) in enumerate(zip(shape, zooms, strict=False)):
        j = int(world_axis[i]) if not np.isnan(world_axis[i]) else i
        out[j] = max(1, round(n * float(z) / float(pixdim[j])))
    return tuple(out)


def estimate_item_bytes(
    item: Mapping[str, Any],
    channels: Mapping[str, int],
    pixdim: Sequence[float],
    dtype: str | Mapping[str, str] = "float32",
    crop_fraction: float = 1.0,
) -> int:
    """Bytes one case holds in the cache: for each key of ``channels``, the resampled shape of the item's file (the
    first file of a multi-file image) times its cached channels, times ``crop_fraction``, times the size of the key's
    ``dtype`` (one type for all keys, or a mapping key -> type; float32 for a key it does not name)."""
    total = 0
    for key, n_channels in channels.items():
        itemsize = np.dtype(dtype.get(key, "float32") if isinstance(dtype, Mapping) else dtype).itemsize
        if key not in item:
            continue
        path = item[key]
        if not isinstance(path, (str, os.PathLike)):
            path = path[0]  # multi-file image (BraTS 2021: one file per channel, same grid)
        total += int(np.prod(resampled_shape(path, pixdim))) * int(n_channels) * itemsize
    return round(total * crop_fraction)


def estimate_cache_bytes(
    items: Sequence[Mapping[str, Any]],
    channels: Mapping[str, int],
    pixdim: Sequence[float],
    dtype: str | Mapping[str, str] = "float32",
    crop_fraction: float = 1.0,
) -> int:
    """Bytes a cache of all ``items`` holds (:func:`estimate_item_bytes` summed); headers only."""
    return sum(estimate_item_bytes(item, channels, pixdim, dtype, crop_fraction) for item in items)


def choose_cache_rate(
    cache_rate: float | str,
    estimate: int,
    available: int | None,
    memory_fraction: float,
    name: str = "cache",
    processes: int = 1,
) -> float:
    """The ``cache_rate`` to give ``CacheDataset``: for ``"auto"`` the share that fits ``memory_fraction *
    available / processes`` (1.0 when it all fits; 1.0 when the available memory is unknown); for a number, the
    number, refused with a ``ValueError`` when ``processes * number * estimate`` exceeds ``available``."""
    if not 0.0 < float(memory_fraction) <= 1.0:
        raise ValueError(f"cache_memory_fraction must be in (0, 1], got {memory_fraction!r}.")
    if isinstance(cache_rate, str) and cache_rate.strip().lower() != "auto":
        try:
            cache_rate = float(cache_rate)
        except ValueError:
            raise ValueError(f"cache_rate must be 'auto' or a number in [0, 1], got {cache_rate!r}.") from None
    each = f" ({processes} processes on this node, each with its own cache)" if processes > 1 else ""
    if isinstance(cache_rate, str):
        if available is None:
            logger.warning(f"{name}: available memory unknown; cache_rate auto caches every case ({_gib(estimate)})")
            return 1.0
        budget = memory_fraction * available / processes
        rate = 1.0 if estimate <= budget else budget / estimate
        logger.info(
            f"{name}: cache_rate auto -> {rate:.3f} ({_gib(rate * estimate)} of the {_gib(estimate)} estimate, "
            f"budget {_gib(budget)} = cache_memory_fraction {memory_fraction} of {_gib(available)} available{each})"
        )
        return rate
    rate = float(cache_rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"cache_rate must be 'auto' or a number in [0, 1], got {cache_rate!r}.")
    if available is not None and processes * rate * estimate > available:
        raise ValueError(
            f"{name}: cache_rate {rate} would cache about {_gib(rate * estimate)} (estimate {_gib(estimate)} for "
            f"every case){each} but only {_gib(available)} of memory is available (budget with cache_memory_fraction "
            f"{memory_fraction}: {_gib(memory_fraction * available / processes)}). Set cache_rate auto, or a "
            f"cache_rate of at most {memory_fraction * available / processes / max(estimate, 1):.3f}; "
            "no image was read."
        )
    logger.info(f"{name}: cache_rate {rate} -> about {_gib(rate * estimate)} cached{each}")
    return rate


def _free_disk(folder: str | os.PathLike) -> int:
    """Free bytes of the file system that holds ``folder`` (or its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk_cache(rate: float, estimate: int, cache_dir: str | os.PathLike | None, name: str = "cache") -> None:
    """Log where the cases beyond the memory cache go, and refuse a disk cache that cannot hold them: the share
    ``1 - rate`` of ``estimate`` is written to ``cache_dir`` (one copy, whatever the processes), or, without a
    ``cache_dir``, pre-processed from the files at every use."""
    rest = (1.0 - rate) * estimate
    if rate >= 1.0 or rest <= 0:
        return
    if cache_dir in (None, "", "none", "None"):
        logger.info(f"{name}: {_gib(rest)} of cases beyond the memory cache pre-processed from the files at each use")
        return
    free = _free_disk(cache_dir)
    if rest > free:
        raise ValueError(
            f"{name}: the cases beyond the memory cache need about {_gib(rest)} in the disk cache {cache_dir} but its "
            f"file system has {_gib(free)} free. Free space there, give another --cache_dir, or --cache_dir none to "
            f"pre-process those cases from the files at each use; no image was read."
        )
    logger.info(f"{name}: about {_gib(rest)} of cases written to the disk cache {cache_dir} ({_gib(free)} free)")


def cache_rate_for(
    items: Sequence[Mapping[str, Any]],
    cache_rate: float | str,
    memory_fraction: float,
    channels: Mapping[str, int],
    pixdim: Sequence[float],
    dtype: str | Mapping[str, str] = "float32",
    crop_fraction: float = 1.0,
    name: str = "cache",
    cache_dir: str | os.PathLike | None = None,
) -> float:
    """The ``cache_rate`` of a ``CacheDataset`` (or :class:`shared_networks.MemoryThenDiskDataset`) of ``items``
    (train and validation caches share one budget: give both lists and use the one rate for both): estimates the cache
    from the headers, logs it beside the available memory, chooses by :func:`choose_cache_rate` with this node's
    processes (:func:`local_processes`), and checks the disk cache for the rest (:func:`check_disk_cache`). Reads
    headers only; a refused setting raises before any image is read.

    Example (a config's one-line item):
    ``$shared_networks.cache_rate_for(@train#dataset#data, @cache_rate, @cache_memory_fraction, {'image': 4}, @pixdim)``
    """
    estimate = estimate_cache_bytes(items, channels, pixdim, dtype, crop_fraction)
    available = available_memory()
    types = dict(dtype) if isinstance(dtype, Mapping) else dtype
    logger.info(
        f"{name}: estimated cache {_gib(estimate)} for {len(items)} cases ({dict(channels)} channels, {types}, "
        f"pixdim {list(pixdim)}, whole resampled volume x {crop_fraction}: the foreground crop is not read from the "
        f"headers); memory available {_gib(available) if available is not None else 'unknown'}"
    )
    rate = choose_cache_rate(cache_rate, estimate, available, memory_fraction, name, local_processes())
    check_disk_cache(rate, estimate, cache_dir, name)
    return rate
