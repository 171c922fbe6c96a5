"""Learning rates and schedule lengths of the bundles' workflows, as their configs compute them.

    lr: $shared_networks.scaled_lr(@base_lr, @batch_size)
    warmup_steps: $shared_networks.epoch_steps(@warmup_epochs, @train#dataloader)
    max_epochs: $shared_networks.pretrain_or_finetune(@ckpt_prefix, @pretrain_epochs, @finetune_epochs)

A multi-process run multiplies every learning rate by its number of processes (:func:`~shared_networks.scale_lr`).
"""

from __future__ import annotations

from collections.abc import Sized
from typing import TypeVar

__all__ = ["REFERENCE_BATCH", "epoch_steps", "pretrain_or_finetune", "scaled_lr"]

REFERENCE_BATCH = 256
"""The batch size a base learning rate is given for (MAE's linear scaling rule: ``lr = base_lr * batch / 256``)."""

T = TypeVar("T")


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """``base_lr * batch_size / 256``: the learning rate of one process's batch (MAE's linear scaling rule).

    The batch counts images in 2D and volumes in 3D (each giving ``num_samples`` crops, the reference's rule); a
    multi-process run multiplies the rate by the number of processes as well (:func:`~shared_networks.scale_lr`).
    """
    return base_lr * batch_size / REFERENCE_BATCH


def epoch_steps(epochs: int, loader: Sized) -> int:
    """Iterations of ``epochs`` epochs over ``loader`` (an lr schedule's warmup or total length in steps)."""
    return epochs * len(loader)


def pretrain_or_finetune(ckpt_prefix: str, pretrain: T, finetune: T) -> T:
    """``pretrain`` for the pre-training workflow (``ckpt_prefix`` ``'pretrain'``, as ``pretrain.yaml`` sets it),
    ``finetune`` for every other one: an override file merged into every workflow (``small_data.yaml``) gives the
    two their own schedule, since both read ``max_epochs`` and ``warmup_epochs``."""
    return pretrain if ckpt_prefix == "pretrain" else finetune
