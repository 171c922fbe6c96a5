"""What MAE self pre-training reads: the training split's images, plus extra unlabelled images only when asked.

The method pre-trains on the target data set's own training images. The datalist builders
(:func:`~shared_networks.data.btcv.btcv_datalist`, :func:`~shared_networks.data.brats.brats_datalist`,
:func:`~shared_networks.data.cxr14.cxr14_datalist`) therefore make ``pretrain`` the training images alone unless
``pretrain_extra_images`` is true; then the unlabelled images of the data set (BTCV ``imagesTs`` / ``Testing/img``,
MSD ``imagesTs``, BraTS folders without a segmentation) or the extra images of a datalist file's ``pretrain`` list are
added. A validation or test image is never in ``pretrain``. :func:`log_pretrain_images` states at the start of
pre-training how many images are read and from where.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from shared_networks.utils.flags import as_bool

__all__ = [
    "image_key",
    "log_pretrain_images",
    "pretrain_extra_flag",
    "pretrain_items",
    "pretrain_sources",
    "select_pretrain",
]

logger = logging.getLogger(__name__)


def image_key(image: str | os.PathLike | Sequence[str]) -> str:
    """A hashable key of an item's image: its path, or the paths of a multi-file image joined with ``" + "``."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return " + ".join(str(p) for p in image)


def pretrain_items(*groups: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None) -> list[dict]:
    """The items of ``groups`` in order, each image once, with only ``keys`` of each (every key when None)."""
    seen: set[str] = set()
    items = []
    for group in groups:
        for item in group:
            key = image_key(item["image"])
            if key not in seen:
                seen.add(key)
                items.append(dict(item) if keys is None else {k: item[k] for k in keys})
    return items


def select_pretrain(
    training: Sequence[Mapping[str, Any]],
    extra: Sequence[Mapping[str, Any]],
    pretrain_extra_images: bool,
    source: str,
    keys: Sequence[str] | None = None,
) -> list[dict]:
    """The pre-training list: the training images, then the ``extra`` images not among them when asked for (the
    paper's protocol pre-trains on the training split only); logs the extra images left out."""
    train_keys = {image_key(item["image"]) for item in training}
    others = [item for item in pretrain_items(extra, keys=keys) if image_key(item["image"]) not in train_keys]
    if others and not pretrain_extra_images:
        logger.info("%s: %d extra image(s) are not pre-trained on (pretrain_extra_images false).", source, len(others))
    return pretrain_items(training, others if pretrain_extra_images else [], keys=keys)


def pretrain_extra_flag(value: Any) -> bool:
    """``pretrain_extra_images`` as a bool (``true``/``false``, ``1``/``0`` and bools; anything else raises).

    Raises:
        ValueError: naming the setting and the value.
    """
    return as_bool(value, "pretrain_extra_images")


def _folder(image: str | os.PathLike | Sequence[str]) -> str:
    """Folder of an image (of its first file for a multi-file image, of the case folder for BraTS 2021 files)."""
    first = image if isinstance(image, (str, os.PathLike)) else image[0]
    folder = os.path.dirname(str(first))
    return os.path.dirname(folder) if not isinstance(image, (str, os.PathLike)) else folder


def pretrain_sources(
    pretrain: Sequence[Mapping[str, Any]], training: Sequence[Mapping[str, Any]]
) -> tuple[int, dict[str, int]]:
    """Count the pre-training images that are training images, and the others by folder.

    Args:
        pretrain: the items pre-training reads (``{"image": ...}``).
        training: the training split's items.

    Returns:
        ``(n_training, extra)``: the number of ``pretrain`` images of the training split, and ``{folder: count}`` of
        the other (extra) images, folders sorted.
    """
    train_keys = {image_key(item["image"]) for item in training}
    n_training = sum(image_key(item["image"]) in train_keys for item in pretrain)
    extra = Counter(_folder(item["image"]) for item in pretrain if image_key(item["image"]) not in train_keys)
    return n_training, dict(sorted(extra.items()))


def log_pretrain_images(
    pretrain: Sequence[Mapping[str, Any]], training: Sequence[Mapping[str, Any]], pretrain_extra_images: Any
) -> str:
    """Log (INFO) how many images MAE pre-training reads and from where; returns the message.

    E.g. ``MAE pre-training reads 24 images: 24 from the training split, 0 extra (pretrain_extra_images false)``;
    with extra images, their folders follow: ``..., 3 extra from '/data/btcv/imagesTs' (pretrain_extra_images
    true)``. The bundles' ``pretrain.yaml`` calls it in ``initialize``.

    Args:
        pretrain: the items pre-training reads (``train#dataset#data``).
        training: the training split's items (``datalist['training']``).
        pretrain_extra_images: the setting the datalist was built with.
    """
    flag = pretrain_extra_flag(pretrain_extra_images)
    n_training, extra = pretrain_sources(pretrain, training)
    n_extra = sum(extra.values())
    if len(extra) == 1:
        extra_text = f"{n_extra} extra from '{next(iter(extra))}'"
    elif extra:
        extra_text = f"{n_extra} extra (" + ", ".join(f"{n} from '{folder}'" for folder, n in extra.items()) + ")"
    else:
        extra_text = "0 extra"
    message = (
        f"MAE pre-training reads {len(pretrain)} images: {n_training} from the training split, {extra_text} "
        f"(pretrain_extra_images {str(flag).lower()})"
    )
    logger.info(message)
    return message
