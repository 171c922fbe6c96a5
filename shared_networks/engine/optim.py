"""Optimiser parameter groups with layer-wise learning-rate decay (BEiT/MAE fine-tuning recipe).

Bao et al., "BEiT", ICLR 2022 (https://arxiv.org/abs/2106.08254); He et al., MAE, CVPR 2022. The warmup-cosine
schedule is MONAI's ``monai.optimizers.WarmupCosineSchedule`` (multiplicative, so per-group rates are kept).
"""

from __future__ import annotations

from torch import nn

__all__ = ["NO_WEIGHT_DECAY_NAMES", "layer_id", "param_groups_lrd"]

NO_WEIGHT_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "decoder_pos_embed")


def layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter: 0 for the embedding and tokens, i + 1 for encoder block i, num_layers + 1 otherwise."""
    if name.startswith(("encoder.patch_embed", "encoder.pos_embed", "encoder.cls_token")):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    return num_layers + 1


def param_groups_lrd(model: nn.Module, lr: float, weight_decay: float = 0.05, layer_decay: float = 0.75) -> list[dict]:
    """AdamW parameter groups: lr * layer_decay ** (num_layers + 1 - depth), no decay on 1-D tensors and tokens.

    The model must have an ``encoder`` (``ViTEncoder``); the head/decoder gets the full ``lr`` and the patch
    embedding the smallest. ``layer_decay=1`` gives plain groups (used in pre-training). Frozen tensors are left out.

    Args:
        model: network with ``model.encoder.num_layers``.
        lr: base (head) learning rate.
        weight_decay: decay for matrices and convolution kernels.
        layer_decay: per-block multiplicative decay, in (0, 1].
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}.")
    num_layers = model.encoder.num_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim == 1 or name.split(".")[-1] in NO_WEIGHT_DECAY_NAMES
        depth = layer_id(name, num_layers)
        key = (depth, no_decay)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - depth)
            groups[key] = {
                "params": [],
                "names": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]
