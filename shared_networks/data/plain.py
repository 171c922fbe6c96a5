"""Random training transforms on plain tensors: MONAI's metadata tracking off where nothing reads it.

A training batch needs no metadata but the source file names (which :class:`~shared_networks.StopOnNonFinite` names
when a loss turns non-finite). With tracking on, every MONAI transform wraps its output in a ``MetaTensor``, every
tensor operation on it (in the transforms, the collation and the network's forward pass) goes through
``MetaTensor.__torch_function__``, and ``CacheDataset`` deep-copies each cached ``MetaTensor`` with its metadata and
transform trace before the random transforms: together most of a chest X-ray pre-training epoch's loading time
(benchmarks/README.md, "Workflows and CPU inference").
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta, set_track_meta
from monai.transforms import Compose
from monai.utils import ImageMetaKey

__all__ = ["ComposeWithoutMeta"]

_FILE_KEY = ImageMetaKey.FILENAME_OR_OBJ
_lock = threading.Lock()
_depth = 0
_saved = True


class _TrackingOff:
    """MONAI's (process-wide) metadata tracking off inside the block, re-entrant and safe across threads: the
    first block in switches it off, the last one out restores the setting found. Being process-wide, it is also off
    for another thread running MONAI transforms at the same moment; the training workflows run their random
    transforms in the main thread (no loader workers) or in worker processes, with nothing else beside them."""

    def __enter__(self) -> None:
        global _depth, _saved
        with _lock:
            if _depth == 0:
                _saved = get_track_meta()
                set_track_meta(False)
            _depth += 1

    def __exit__(self, *exc) -> None:
        global _depth
        with _lock:
            _depth -= 1
            if _depth == 0:
                set_track_meta(_saved)


def _copy(value: Any) -> Any:
    if isinstance(value, MetaTensor):
        return value.as_tensor().clone()
    return value.clone() if isinstance(value, torch.Tensor) else value


def _plain(item: Any, file_keys: Sequence[str]) -> Any:
    """A dict item with each tensor replaced by a plain copy (a ``MetaTensor`` by a copy of its array), and the file
    name of each ``file_keys`` entry kept as ``<key>_meta_dict = {"filename_or_obj": ...}``."""
    if not isinstance(item, Mapping):
        return _copy(item)
    out = {key: _copy(value) for key, value in item.items()}
    for key in file_keys:
        value = item.get(key)
        name = value.meta.get(_FILE_KEY) if isinstance(value, MetaTensor) else value
        if isinstance(name, str) and f"{key}_meta_dict" not in out:
            out[f"{key}_meta_dict"] = {_FILE_KEY: name}
    return out


class ComposeWithoutMeta(Compose):
    """``monai.transforms.Compose`` that runs its transforms on plain tensors, with metadata tracking off.

    For the random transforms of a training pipeline, placed after the deterministic (cached) ones::

        Compose([LoadImaged(...), ..., ComposeWithoutMeta([RandAffined(...), ...], file_keys=["image"])])

    On entry each ``MetaTensor`` of the item becomes a plain tensor (a copy, so the cached item is never changed and
    the dataset's ``copy_cache`` deep copy can be turned off); the file name of each ``file_keys`` entry (from the
    ``MetaTensor``'s metadata, or the path string when the item arrives unloaded) is kept as
    ``<key>_meta_dict = {"filename_or_obj": name}``, which collates into the batch's list of file names. The
    transforms draw the same random numbers and compute the same values as with tracking on; only the metadata
    (affine, transform trace) is not kept, so the outputs cannot be inverted: use it for training, not for
    inference or evaluation. It is ``Randomizable`` like any ``Compose``: ``CacheDataset`` caches up to it, and
    seeding (``set_determinism``, ``EpochSeeder``, MONAI's loader workers) reaches its transforms.

    Args:
        transforms: the transforms, as for ``Compose``.
        file_keys: keys whose source file name is kept (default ``("image",)``).
        kwargs: the other arguments of ``Compose``.
    """

    def __init__(self, transforms=None, file_keys: Sequence[str] = ("image",), **kwargs) -> None:
        super().__init__(transforms, **kwargs)
        self.file_keys = tuple(file_keys)

    def __call__(self, input_, start=0, end=None, threading=False, lazy: bool | None = None):
        with _TrackingOff():
            data = (
                [_plain(x, self.file_keys) for x in input_]
                if isinstance(input_, list)
                else _plain(input_, self.file_keys)
            )
            return super().__call__(data, start=start, end=end, threading=threading, lazy=lazy)
