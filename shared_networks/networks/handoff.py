"""Hand-off of a pre-trained MAE encoder to a fine-tuning network, with a key report and position-embedding resize."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "HandoffReport", "NonFiniteError", "check_finite", "extract_encoder_state", "first_non_finite",
    "interpolate_pos_embed", "load_pretrained_encoder",
]  # fmt: skip

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("network", "model", "state_dict", "net")


class NonFiniteError(FloatingPointError, RuntimeError):
    """A loss, gradient or weight tensor holds NaN or infinite values; the message names where (file and tensor, or
    epoch, iteration and the batch's files). Both a ``FloatingPointError`` and a ``RuntimeError``."""


def _tensors(state, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(key, tensor)`` of every tensor in a (nested) state dict, keys joined with '.'."""
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, Mapping):
        for key, value in state.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from _tensors(value, f"{prefix}.{i}" if prefix else str(i))


def first_non_finite(state) -> str | None:
    """Key of the first tensor of ``state`` (a state dict, nested dicts/lists of them, or a module) holding NaN or
    infinite values (nested keys joined with '.'), or ``None`` when every floating-point tensor is finite."""
    if isinstance(state, nn.Module):
        state = state.state_dict()
    for key, value in _tensors(state):
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            return key
    return None


def describe_non_finite(tensor: torch.Tensor) -> str:
    """``"3 NaN, 0 inf of 96 values"``."""
    t = tensor.detach()
    return f"{int(torch.isnan(t).sum())} NaN, {int(torch.isinf(t).sum())} inf of {t.numel()} values"


def check_finite(state, source: str, hint: str = "") -> None:
    """Raise :class:`NonFiniteError` naming ``source`` (a file) and the first tensor of ``state`` with NaN or
    infinite values; ``hint`` is appended to the message."""
    key = first_non_finite(state)
    if key is None:
        return
    if isinstance(state, nn.Module):
        state = state.state_dict()
    tensor = dict(_tensors(state))[key]
    raise NonFiniteError(
        f"{source}: tensor '{key}' holds non-finite values ({describe_non_finite(tensor)})"
        + (f"; {hint}" if hint else ".")
    )


@dataclass
class HandoffReport:
    """What a hand-off did: keys loaded, resized, left at their initial value, and ignored from the checkpoint."""

    source: str
    loaded: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped_decoder: int = 0

    def summary(self) -> str:
        return (
            f"pre-trained encoder from {self.source}: {len(self.loaded)} tensors loaded "
            f"({len(self.interpolated)} interpolated: {self.interpolated or '-'}), missing {self.missing or '-'}, "
            f"unexpected {self.unexpected or '-'}, {self.skipped_decoder} MAE decoder tensors not used"
        )


def _unwrap(state: Mapping) -> Mapping:
    for key in _WRAPPER_KEYS:
        if key in state and isinstance(state[key], Mapping):
            return state[key]
    return state


def extract_encoder_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Encoder tensors of an MAE state dict (``encoder.`` prefix stripped, DDP ``module.`` too), decoder count."""
    encoder, others = {}, 0
    for key, value in _unwrap(state).items():
        key = key.removeprefix("module.")
        if key.startswith("encoder."):
            encoder[key[len("encoder.") :]] = value
        else:
            others += 1
    return encoder, others


def interpolate_pos_embed(
    pos_embed: torch.Tensor, src_grid: tuple[int, ...], dst_grid: tuple[int, ...]
) -> torch.Tensor:
    """Resize a (1, L, D) patch position embedding from ``src_grid`` to ``dst_grid`` tokens per axis.

    Linear (2D: bilinear, 3D: trilinear) interpolation with aligned corners off, as for timm/MAE checkpoints.
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    n, d = len(src_grid), pos_embed.shape[-1]
    if pos_embed.shape[1] != torch.Size(src_grid).numel():
        raise ValueError(f"position embedding holds {pos_embed.shape[1]} tokens, not a {src_grid} grid.")
    x = pos_embed.reshape(1, *src_grid, d).movedim(-1, 1).float()  # (1, D, h, w[, z])
    x = F.interpolate(x, size=tuple(dst_grid), mode="bilinear" if n == 2 else "trilinear", align_corners=False)
    return x.movedim(1, -1).reshape(1, -1, d).to(pos_embed.dtype)  # (1, L', D)


def load_pretrained_encoder(
    network: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
    src_img_size: tuple[int, ...] | None = None,
    map_location: str | torch.device = "cpu",
) -> HandoffReport:
    """Load the encoder of an MAE checkpoint into ``network.encoder`` (a ``ViTEncoder``) and report the keys.

    Every tensor of the fine-tuning encoder must come from the checkpoint, except the class token when only the
    fine-tuning network has one; anything else missing, or a shape that cannot be matched, raises ``ValueError``
    naming the checkpoint. A position embedding of another grid is interpolated (the pre-training grid is read
    from the tensor for square/cubic grids, or given as ``src_img_size``).

    Args:
        network: a model with an ``encoder`` attribute (UNETR, ViTClassifier, MaskedAutoencoderViT).
        checkpoint: path to a ``torch.save``'d state dict (plain, or under "network"/"model"/"state_dict"), or one.
        src_img_size: pre-training image size, needed only for non-cubic pre-training grids.
        map_location: where tensors are loaded.

    Raises:
        NonFiniteError: naming the checkpoint and its first tensor with NaN or infinite values.

    Returns:
        The :class:`HandoffReport`, also logged at INFO level.
    """
    source = str(checkpoint) if not isinstance(checkpoint, Mapping) else "<state dict>"
    if not isinstance(checkpoint, Mapping):
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"pre-trained checkpoint {checkpoint} does not exist.")
        try:
            checkpoint = torch.load(checkpoint, map_location=map_location, weights_only=True)
        except Exception as e:  # truncated zip, pickle with code, not a torch file
            raise ValueError(f"pre-trained checkpoint {source} cannot be read: {e}") from e
    check_finite(
        _unwrap(checkpoint) if isinstance(checkpoint, Mapping) else checkpoint,
        f"pre-trained checkpoint {source}",
        "its pre-training diverged or read bad images (check the data with python -m shared_networks.cli.validate and "
        "pre-train again), or fine-tune from scratch with --pretrained_ckpt none",
    )
    src, n_other = extract_encoder_state(checkpoint)
    if not src:
        raise ValueError(f"{source} holds no 'encoder.*' tensors: is it an MAE checkpoint of this project?")
    encoder = network.encoder
    dst = encoder.state_dict()
    report = HandoffReport(source=source, skipped_decoder=n_other)
    new_state = {}
    for key, target in dst.items():
        if key not in src:
            if key == "cls_token":  # a classifier with a class token fine-tuned from an MAE without one
                new_state[key] = target
                report.missing.append(key)
                continue
            raise ValueError(f"{source}: encoder tensor '{key}' is missing; the checkpoint does not fit this network.")
        value = src[key]
        if key == "pos_embed" and value.shape != target.shape:
            src_grid = _source_grid(value, encoder, src_img_size, source)
            value = interpolate_pos_embed(value, src_grid, encoder.grid_size)
            report.interpolated.append(f"pos_embed {tuple(src_grid)}->{tuple(encoder.grid_size)}")
        if value.shape != target.shape:
            raise ValueError(
                f"{source}: encoder tensor '{key}' has shape {tuple(value.shape)}, the network expects "
                f"{tuple(target.shape)} (different in_channels, patch size or width?)."
            )
        new_state[key] = value
        report.loaded.append(key)
    report.unexpected = sorted(set(src) - set(dst))
    encoder.load_state_dict(new_state, strict=True)
    logger.info(report.summary())
    return report


def _source_grid(value: torch.Tensor, encoder: nn.Module, src_img_size, source: str) -> tuple[int, ...]:
    n = len(encoder.grid_size)
    if src_img_size is not None:
        return tuple(s // p for s, p in zip(src_img_size, encoder.patch_size, strict=True))
    side = round(value.shape[1] ** (1.0 / n))
    if side**n != value.shape[1]:
        raise ValueError(f"{source}: pre-training grid of {value.shape[1]} tokens is not cubic; give src_img_size.")
    return (side,) * n
