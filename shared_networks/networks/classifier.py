"""ViT classifier: the pre-trained encoder with a linear head, for 2D or 3D images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shared_networks.networks.handoff import refuse_non_finite
from shared_networks.networks.vit import ViTEncoder

__all__ = ["FeatureHead", "ViTClassifier"]


class ViTClassifier(nn.Module):
    """ViT encoder, pooling and a linear head returning logits (B, num_classes).

    Dosovitskiy et al., ICLR 2021 (https://arxiv.org/abs/2010.11929); heads as in MAE's fine-tuning (He et al.,
    CVPR 2022, https://arxiv.org/abs/2111.06377, ``models_vit.py``), head initialised near zero:

    * ``pool="avg"`` (MAE's ``global_pool``): the patch tokens of the last block are averaged *before* any final
      norm, the average goes through ``fc_norm`` (a LayerNorm) and the head. The encoder is built without its final
      norm (``encoder.norm`` is the identity): an MAE's final-norm weights are not used by this network.
    * ``pool="cls"``: the class token after the encoder's final norm goes to the head (no ``fc_norm``).

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
        if "final_norm" in encoder_kwargs or "cls_token" in encoder_kwargs:
            raise ValueError("final_norm and cls_token follow from pool ('avg': neither, 'cls': both).")
        self.pool = pool
        avg = self.pool == "avg"
        self.encoder = ViTEncoder(in_channels, img_size, cls_token=not avg, final_norm=not avg, **encoder_kwargs)
        d = self.encoder.hidden_size
        self.fc_norm = nn.LayerNorm(d, eps=1e-6) if avg else nn.Identity()
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(d, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)
        self.register_load_state_dict_pre_hook(refuse_non_finite)  # NaN/inf weights, from any loader
        self.register_load_state_dict_pre_hook(_refuse_norm_before_pool)

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P + L, D) tokens from ``encoder.forward_features`` -> (B, D): the average of the patch tokens
        (``pool="avg"``, before ``fc_norm``) or the class token."""
        if self.pool == "avg":
            return tokens[:, self.encoder.num_prefix_tokens :].mean(dim=1)
        return tokens[:, 0]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled features (:meth:`features`) -> (B, num_classes): ``fc_norm``, dropout and the head."""
        return self.head(self.head_drop(self.fc_norm(features)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> (B, D) pooled encoder features, the input of :meth:`classify` (a linear probe's features)."""
        return self.pool_tokens(self.encoder.forward_features(x))

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P + L, D) tokens from ``encoder.forward_features`` -> (B, num_classes)."""
        return self.classify(self.pool_tokens(tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.encoder.forward_features(x))


class FeatureHead(nn.Module):
    """The part of a :class:`ViTClassifier` after its encoder, as a network of its own: (B, D) pooled features ->
    (B, num_classes) logits, with the classifier's own ``fc_norm`` and ``head`` (shared, not copied). A linear probe
    trains it on features computed once (:class:`~shared_networks.data.features.EncoderFeaturesd`); the classifier it
    belongs to is then the whole trained model, saved and served as usual."""

    def __init__(self, classifier: ViTClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier.classify(features)


def _refuse_norm_before_pool(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected, error_msgs):
    """Load-state-dict pre-hook: weights of the earlier global-pool head (final norm on every token, then the average
    and ``fc_norm``) compute another function than this head; loading them without the norm would be silently wrong."""
    if module.pool == "avg" and f"{prefix}encoder.norm.weight" in state_dict:
        error_msgs.append(
            "these weights hold 'encoder.norm.*': they were fine-tuned with the earlier average-pool head (the "
            "encoder's final norm on every token before the average), which this ViTClassifier no longer has (MAE's "
            "recipe: average, then fc_norm). They cannot be converted exactly: fine-tune again from the MAE checkpoint."
        )
