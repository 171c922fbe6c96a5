"""Data-loader and transform arguments that the bundle configs derive from their settings.

    persistent_workers: $shared_networks.keep_workers(@persistent_workers, @loader_workers)
    prefetch_factor: $shared_networks.prefetch_batches(@prefetch_factor, @loader_workers)
    drop_last: $shared_networks.drop_last_batch(@train#dataset, @batch_size)
    interp_modes: $shared_networks.interp_modes(@spatial_keys)
    translate_range: $shared_networks.scaled_sizes(@img_size, 0.05)
    background: $shared_networks.normalized_value(0.0, @intensity_mean, @intensity_std)
    data: $shared_networks.image_items(@inputs)

torch refuses ``persistent_workers`` and a ``prefetch_factor`` for a loader without workers; the workflows run with
none on 2-3 cores (:func:`~shared_networks.loader_workers`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Sized

from shared_networks.utils.flags import as_bool

__all__ = [
    "drop_last_batch",
    "image_items",
    "interp_modes",
    "keep_workers",
    "normalized_value",
    "prefetch_batches",
    "scaled_sizes",
]


def keep_workers(keep: bool | str, workers: int) -> bool:
    """``persistent_workers`` of a loader: its workers live across epochs when ``keep`` is true and it has workers.

    Validation, evaluation and inference loaders keep them (no restart, no cache copy per pass); the training loader
    only with the ``persistent_workers`` setting (a worker that persists keeps its random state across epochs, so a
    resumed run would no longer repeat the uninterrupted one).

    Raises:
        ValueError: ``keep`` is no true/false value.
    """
    return as_bool(keep, "persistent_workers") and workers > 0


def prefetch_batches(prefetch_factor: int, workers: int) -> int | None:
    """``prefetch_factor`` of a loader: batches each worker prepares ahead, ``None`` without workers."""
    return prefetch_factor if workers > 0 else None


def drop_last_batch(data: Sized, batch_size: int) -> bool:
    """``drop_last`` of a training loader: the incomplete last batch is dropped only when ``data`` (a dataset, or a
    distributed sampler: one process's share) fills more than one batch, so a set smaller than a batch still trains."""
    return len(data) > batch_size


def interp_modes(keys: Iterable[str], image_key: str = "image") -> list[str]:
    """Interpolation of each of ``keys`` when resampled (``Spacingd``'s ``mode``): bilinear for the image, nearest
    for labels."""
    return ["bilinear" if k == image_key else "nearest" for k in keys]


def scaled_sizes(sizes: Sequence[float], fraction: float) -> list[float]:
    """``fraction`` of each of ``sizes``, e.g. a random shift of at most 5 % of the image per axis, in pixels."""
    return [fraction * s for s in sizes]


def normalized_value(value: float, mean: float, std: float) -> float:
    """What ``value`` becomes after ``NormalizeIntensityd(subtrahend=mean, divisor=std)``, e.g. the black that an
    affine brings in from outside a normalised image (0 would be mid-grey)."""
    return (value - mean) / std


def image_items(paths: Iterable[str]) -> list[dict[str, str]]:
    """Dataset items ``{'image': path}`` of inference inputs."""
    return [{"image": p} for p in paths]
