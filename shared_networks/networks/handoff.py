"""Hand-off of a pre-trained MAE encoder to a fine-tuning network, with a key report and a position-embedding resize
from the pre-training token grid the checkpoint records."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from shared_networks.networks.vit import GeometryRecord

__all__ = [
    "HandoffReport",
    "NonFiniteError",
    "check_finite",
    "extract_encoder_state",
    "first_non_finite",
    "interpolate_pos_embed",
    "load_pretrained_encoder",
    "read_geometry",
    "refuse_non_finite",
    "source_grid",
]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("network", "model", "state_dict", "net", "mae")
GEOMETRY_PREFIX = "geometry."  # MaskedAutoencoderViT's GeometryRecord


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


# the loaders whose frames name the file being loaded: (module, function) -> the file, from the frame's locals
_LOADERS: dict[tuple[str, str], Callable[[Mapping], object]] = {
    ("ignite.handlers.checkpoint", "load_objects"): lambda f: f.get("checkpoint"),  # MONAI's ckpt/onnx/trt_export
    ("monai.bundle.scripts", "_export"): lambda f: f.get("ckpt_file"),  # the same, without ignite
    ("monai.handlers.checkpoint_loader", "__call__"): lambda f: getattr(f.get("self"), "load_path", None),
}


def _file_being_loaded() -> str | None:
    """The checkpoint file a known loader up the call stack is loading (:data:`_LOADERS`), or ``None``."""
    frame = sys._getframe(1)
    while frame is not None:
        get = _LOADERS.get((frame.f_globals.get("__name__"), frame.f_code.co_name))
        value = get(frame.f_locals) if get is not None else None
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        frame = frame.f_back
    return None


def refuse_non_finite(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """Load-state-dict pre-hook of the networks a bundle builds (``UNETR``, ``ViTClassifier``,
    ``MaskedAutoencoderViT``): a state dict with NaN or infinite values is refused with :class:`NonFiniteError`
    before any of it is copied into the network.

    Every route that loads weights into a bundle's network then refuses them, MONAI's own included:
    ``python -m monai.bundle ckpt_export`` / ``onnx_export`` / ``trt_export`` of ``network_def`` would otherwise
    export a NaN checkpoint and exit 0. The message names the file when the loader is one that knows it (ignite's
    ``Checkpoint.load_objects`` given a path, as MONAI's exports call it, or MONAI's ``CheckpointLoader``) and the
    first bad tensor.
    """
    state = state_dict if not prefix else {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    if first_non_finite(state) is None:
        return
    path = _file_being_loaded()
    check_finite(
        state,
        f"checkpoint '{path}'" if path else f"the state dict loaded into {type(module).__name__}",
        f"refusing to load it into {type(module).__name__}: the weights of a run that diverged or read bad images "
        "(retrain after checking the data with python -m shared_networks.cli.validate)",
    )


@dataclass
class HandoffReport:
    """What a hand-off did: keys loaded, resized, left at their initial value, not used by design, and ignored.

    ``src_grid`` is the pre-training token grid of the position embedding, read from the checkpoint's geometry record
    (``geometry.*``). ``not_used`` holds the encoder's final norm when the fine-tuning network has none (MAE's
    global-pool head normalises the pooled feature instead).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    not_used: list[str] = field(default_factory=list)
    skipped_decoder: int = 0
    src_grid: tuple[int, ...] | None = None

    def summary(self) -> str:
        dropped = f", final norm {self.not_used} not used (global-pool head)" if self.not_used else ""
        grid = f", pre-training grid {self.src_grid}" if self.src_grid else ""
        return (
            f"pre-trained encoder from {self.source}: {len(self.loaded)} tensors loaded "
            f"({len(self.interpolated)} interpolated: {self.interpolated or '-'}), missing {self.missing or '-'}, "
            f"unexpected {self.unexpected or '-'}, {self.skipped_decoder} MAE decoder tensors not used{dropped}{grid}"
        )


def _unwrap(state: Mapping) -> Mapping:
    for key in _WRAPPER_KEYS:
        if key in state and isinstance(state[key], Mapping):
            return state[key]
    return state


def extract_encoder_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Encoder tensors of an MAE state dict (``encoder.`` prefix stripped, DDP ``module.`` too), decoder count
    (the geometry record not counted)."""
    encoder, others = {}, 0
    for key, value in _unwrap(state).items():
        key = key.removeprefix("module.")
        if key.startswith("encoder."):
            encoder[key[len("encoder.") :]] = value
        elif not key.startswith(GEOMETRY_PREFIX):
            others += 1
    return encoder, others


def read_geometry(state: Mapping, source: str = "<state dict>") -> dict[str, tuple[int, ...] | int] | None:
    """The pre-training geometry an MAE state dict records (``geometry.*``, see
    :class:`~shared_networks.networks.vit.GeometryRecord`), or ``None`` when it records none.

    Returns:
        ``{"img_size": (H, W[, Z]), "patch_size": ..., "grid_size": ..., "spatial_dims": n}``.

    Raises:
        ValueError: naming ``source`` when the record is incomplete or inconsistent.
    """
    flat = {k.removeprefix("module."): v for k, v in _unwrap(state).items()}
    found = {k: flat[GEOMETRY_PREFIX + k] for k in GeometryRecord.KEYS if GEOMETRY_PREFIX + k in flat}
    if not found:
        return None
    if len(found) != len(GeometryRecord.KEYS):
        missing = [GEOMETRY_PREFIX + k for k in GeometryRecord.KEYS if k not in found]
        raise ValueError(f"{source}: the pre-training geometry record is incomplete, {missing} missing.")
    geo = {k: tuple(int(x) for x in v.reshape(-1).tolist()) for k, v in found.items()}  # every entry as a tuple
    img, patch, grid = geo["img_size"], geo["patch_size"], geo["grid_size"]
    geo["spatial_dims"] = n = geo["spatial_dims"][0] if len(geo["spatial_dims"]) == 1 else -1
    if not len(img) == len(patch) == len(grid) == n or grid != tuple(i // p for i, p in zip(img, patch, strict=True)):
        raise ValueError(f"{source}: the pre-training geometry record {geo} is inconsistent (grid = img_size // patch)")
    return geo


def interpolate_pos_embed(pos_embed: torch.Tensor, src_grid: Sequence[int], dst_grid: Sequence[int]) -> torch.Tensor:
    """Resize a (1, L, D) patch position embedding from ``src_grid`` to ``dst_grid`` tokens per axis (row-major
    token order, as ``PatchEmbed`` flattens).

    2D: bicubic, as MAE's and timm's fine-tuning code resizes ViT position embeddings (no antialiasing, as MAE);
    3D: trilinear; corners not aligned. Equal grids return ``pos_embed`` itself.
    """
    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    if src_grid == dst_grid:
        return pos_embed
    n, d = len(src_grid), pos_embed.shape[-1]
    if n not in (2, 3) or len(dst_grid) != n:
        raise ValueError(f"cannot resize a position embedding from grid {src_grid} to {dst_grid}.")
    if pos_embed.shape[1] != math.prod(src_grid):
        raise ValueError(f"position embedding holds {pos_embed.shape[1]} tokens, not a {src_grid} grid.")
    x = pos_embed.reshape(1, *src_grid, d).movedim(-1, 1).float()  # (1, D, h, w[, z])
    x = F.interpolate(x, size=dst_grid, mode="bicubic" if n == 2 else "trilinear", align_corners=False)
    return x.movedim(1, -1).reshape(1, -1, d).to(pos_embed.dtype)  # (1, h' * w'[ * z'], D)


def load_pretrained_encoder(
    network: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
    map_location: str | torch.device = "cpu",
) -> HandoffReport:
    """Load the encoder of an MAE checkpoint into ``network.encoder`` (a ``ViTEncoder``) and report the keys.

    Every tensor of the fine-tuning encoder must come from the checkpoint, except the class token when only the
    fine-tuning network has one; anything else missing, or a shape that cannot be matched, raises ``ValueError``
    naming the checkpoint. The encoder's final norm is not used when the network has none (``not_used``).

    The position embedding is laid out on the pre-training token grid, read from the checkpoint's geometry record
    (:func:`read_geometry`; 64 x 64 x 128 and 128 x 64 x 64 voxels give the same token count, so the count alone
    cannot tell). It is interpolated to the network's grid when the grids differ (:func:`interpolate_pos_embed`),
    even at an equal token count, and copied unchanged when they match.

    Args:
        network: a model with an ``encoder`` attribute (UNETR, ViTClassifier, MaskedAutoencoderViT).
        checkpoint: path to a ``torch.save``'d state dict (plain, or under "network"/"model"/"state_dict"/"mae"), or
            one.
        map_location: where tensors are loaded.

    Raises:
        NonFiniteError: naming the checkpoint and its first tensor with NaN or infinite values.
        ValueError: naming the checkpoint, when it does not fit the network or records no pre-training geometry.

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
    if "pos_embed" in src and "pos_embed" in dst:
        report.src_grid = source_grid(checkpoint, src["pos_embed"], encoder, source)
    new_state = {}
    for key, target in dst.items():
        if key not in src:
            if key == "cls_token":  # a classifier with a class token fine-tuned from an MAE without one
                new_state[key] = target
                report.missing.append(key)
                continue
            raise ValueError(f"{source}: encoder tensor '{key}' is missing; the checkpoint does not fit this network.")
        value = src[key]
        if key == "pos_embed" and report.src_grid != tuple(encoder.grid_size):
            value = interpolate_pos_embed(value, report.src_grid, encoder.grid_size)
            report.interpolated.append(f"pos_embed {report.src_grid}->{tuple(encoder.grid_size)}")
        if value.shape != target.shape:
            raise ValueError(
                f"{source}: encoder tensor '{key}' has shape {tuple(value.shape)}, the network expects "
                f"{tuple(target.shape)} (different in_channels, patch size or width?)."
            )
        new_state[key] = value
        report.loaded.append(key)
    extra = set(src) - set(dst)
    if isinstance(encoder.norm, nn.Identity):  # a global-pool head without the encoder's final norm (MAE's recipe)
        report.not_used = sorted(k for k in extra if k.startswith("norm."))
    report.unexpected = sorted(extra - set(report.not_used))
    encoder.load_state_dict(new_state, strict=True)
    logger.info(report.summary())
    return report


def source_grid(
    checkpoint: Mapping, pos_embed: torch.Tensor, encoder: nn.Module, source: str = "<state dict>"
) -> tuple[int, ...]:
    """The pre-training token grid of ``pos_embed`` (1, L, D), from the checkpoint's geometry record.

    Raises:
        ValueError: naming ``source`` when the checkpoint records no geometry (it was not written by this project's
            pre-training) or a geometry that disagrees with the network or the embedding.
    """
    n, tokens = len(encoder.grid_size), pos_embed.shape[1]
    geo = read_geometry(checkpoint, source)
    if geo is None:
        raise ValueError(
            f"{source} does not record its pre-training geometry (no 'geometry.*' tensors): it was not written by "
            "this project's pre-training (configs/pretrain.yaml), whose checkpoints record it. Pre-train again."
        )
    if geo["spatial_dims"] != n:
        raise ValueError(f"{source}: pre-trained on {geo['spatial_dims']}D images, the network is {n}D.")
    grid = geo["grid_size"]
    if math.prod(grid) != tokens:
        raise ValueError(f"{source}: the position embedding holds {tokens} tokens, not the recorded {grid} grid.")
    return tuple(grid)
