"""ViT classifier: the pre-trained encoder with a linear head, for 2D or 3D images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shared_networks.networks.vit import ViTEncoder

__all__ = ["ViTClassifier"]


class ViTClassifier(nn.Module):
    """ViT encoder, pooling and a linear head returning logits (B, num_classes).

    Dosovitskiy et al., ICLR 2021 (https://arxiv.org/abs/2010.11929); fine-tuning recipe as in MAE
    (He et al., CVPR 2022, https://arxiv.org/abs/2111.06377): global average pooling of the patch tokens followed by
    a LayerNorm (``pool="avg"``), or the class token (``pool="cls"``), and a head initialised near zero.

    Args:
        in_channels: image channels.
        num_classes: outputs (logits; apply a sigmoid for multi-label).
        img_size: spatial input size.
        pool: ``"avg"`` or ``"cls"``.
        head_dropout: dropout before the head.
        encoder_kwargs: forwarded to :class:`~shared_networks.networks.vit.ViTEncoder` (patch_size, hidden_size,
            num_layers, num_heads, mlp_dim, qkv_bias, drop_path_rate, spatial_dims).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        img_size: Sequence[int] | int,
        pool: str = "avg",
        head_dropout: float = 0.0,
        **encoder_kwargs,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}.")
        if pool not in ("avg", "cls"):
            raise ValueError(f"pool must be 'avg' or 'cls', got {pool!r}.")
        self.pool = pool
        self.encoder = ViTEncoder(in_channels, img_size, cls_token=self.pool == "cls", **encoder_kwargs)
        d = self.encoder.hidden_size
        self.fc_norm = nn.LayerNorm(d, eps=1e-6) if self.pool == "avg" else nn.Identity()
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(d, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P + L, D) -> (B, num_classes)."""
        if self.pool == "avg":
            x = self.fc_norm(tokens[:, self.encoder.num_prefix_tokens :].mean(dim=1))  # (B, D)
        else:
            x = tokens[:, 0]  # (B, D)
        return self.head(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.encoder.forward_features(x))
