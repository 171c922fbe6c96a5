"""Caches for the 3D bundles' training data: the share of the cases that fits in memory held there, the rest written
once to a disk cache, and both held in compact types.

- :class:`MemoryThenDiskDataset`: MONAI's ``CacheDataset`` for the first ``cache_rate`` share of the cases, MONAI's
  ``PersistentDataset`` (one file per case in ``cache_dir``, written at its first use, read at every later one) for
  the rest. ``cache_rate`` comes from :func:`shared_networks.cache_rate_for`, which sizes both from the headers.
- :class:`AfterCache`: a ``Compose`` of deterministic transforms that both caches stop before, for what must not be
  stored (a label's region channels built from its one small-integer channel, the cast back to float32).

The bundles cache images in float16 and labels in uint8 (``cache_dtypes``, ``CastToTyped`` as the last cached
transform) and cast them back to float32 after the cache (``restore_transforms``, the first transforms after it):
docs/README.md of each 3D bundle, "Full-size data".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from monai.data import CacheDataset, PersistentDataset
from monai.data.utils import pickle_hashing
from monai.transforms import Compose

__all__ = ["AfterCache", "MemoryThenDiskDataset"]

logger = logging.getLogger(__name__)


class AfterCache(Compose):
    """``monai.transforms.Compose`` of deterministic transforms that run after a cache, at every use of a case.

    ``CacheDataset`` and ``PersistentDataset`` cache the transforms up to the first ``Randomizable`` one, and a
    ``Compose`` is ``Randomizable``: placed after the transforms to cache, this one and everything after it run on the
    cached item (which they do not change: MONAI transforms return new tensors). Metadata is kept, as in any
    ``Compose``. Use it where a cache would hold something larger than what it is computed from, e.g. a label's
    region channels (TC, WT, ET) built from its one uint8 channel.
    """


class MemoryThenDiskDataset(CacheDataset):
    """``CacheDataset`` whose cases beyond the ``cache_rate`` share are served from a disk cache.

    The first ``int(cache_rate * len(data))`` cases are pre-processed into memory as ``CacheDataset`` does (with
    ``num_workers`` threads). Each other case is pre-processed at its first use and written to ``cache_dir`` by a
    ``PersistentDataset`` (``torch.load(weights_only=True)`` when read back), then read from there; with
    ``cache_dir`` None it is pre-processed from the files at every use (``CacheDataset``'s own behaviour). The disk
    cache's file names hash the case and the cached transforms (``hash_transform``), so a changed pipeline writes new
    files instead of reading stale ones. The transforms after the cache (from the first random one, or an
    :class:`AfterCache`) run on every item, from either cache.

    Args:
        data: the cases, as for ``CacheDataset``.
        transform: a ``Compose``: the cached transforms, then the ones at each use.
        cache_rate: the share of the cases held in memory (``shared_networks.cache_rate_for``).
        cache_dir: folder of the disk cache for the other cases; None: no disk cache.
        kwargs: the other arguments of ``CacheDataset`` (``num_workers``, ``copy_cache``, ...).
    """

    def __init__(
        self,
        data: Sequence,
        transform: Compose | Callable,
        cache_rate: float = 1.0,
        cache_dir: str | Path | None = None,
        hash_transform: Callable[..., bytes] | None = pickle_hashing,
        **kwargs,
    ) -> None:
        self.cache_dir = None if cache_dir in (None, "", "none", "None") else Path(cache_dir)
        self._hash_transform = hash_transform
        self.disk: PersistentDataset | None = None
        super().__init__(data, transform, cache_rate=cache_rate, **kwargs)

    def set_data(self, data: Sequence) -> None:
        """Set the cases: the memory cache is rebuilt; the disk cache keeps its files (they are keyed by content)."""
        super().set_data(data)
        self.disk = None
        if self.cache_dir is not None and self.cache_num < len(self.data):
            # made here, not at the first use: hashing the transforms builds a Compose, which re-seeds them
            self.disk = PersistentDataset(
                self.data, self.transform, cache_dir=None, hash_transform=self._hash_transform
            )
            logger.info(
                f"{len(self.data) - self.cache_num} of {len(self.data)} cases served from the disk cache "
                f"{self.cache_dir} (written at each case's first use)"
            )

    def _transform(self, index: int):
        if self.disk is not None and index % len(self) >= self.cache_num:
            if self.disk.cache_dir is None:  # the folder is made when the first case is written, not before
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                self.disk.cache_dir = self.cache_dir
            return self.disk._transform(index % len(self))
        return super()._transform(index)
