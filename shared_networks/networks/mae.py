"""Masked autoencoder on a ViT, for 2D and 3D images with any number of channels.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (https://arxiv.org/abs/2111.06377);
Zhou et al., "Self Pre-training with Masked Autoencoders for Medical Image Classification and Segmentation",
ISBI 2023 (https://arxiv.org/abs/2203.05573).
Shape alphabet: B batch, C channels, L tokens, D width, P voxels per patch (prod(patch_size)), H/W/Z spatial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from shared_networks.networks.handoff import refuse_non_finite
from shared_networks.networks.vit import Block, GeometryRecord, ViTEncoder, init_vit_weights, patchify, sincos_pos_embed

__all__ = [
    "patchify",
    "unpatchify",
    "normalize_patches",
    "random_masking",
    "random_mask_ids",
    "MaskedAutoencoderViT",
    "MaskedPatchLoss",
]


def unpatchify(x: torch.Tensor, patch_size: Sequence[int], img_size: Sequence[int], channels: int) -> torch.Tensor:
    """(B, L, P * C) -> (B, C, H, W[, Z]), the inverse of :func:`patchify`."""
    b = x.shape[0]
    n = len(img_size)
    grid = [s // p for s, p in zip(img_size, patch_size, strict=True)]
    x = x.reshape(b, *grid, *patch_size, channels)  # (B, h, w[, z], p, p[, p], C)
    order = [0, 2 * n + 1]
    for i in range(n):
        order += [1 + i, 1 + n + i]
    x = x.permute(*order)  # (B, C, h, p, w, p[, z, p])
    return x.reshape(b, channels, *img_size)


def normalize_patches(
    patches: torch.Tensor, channels: int = 1, per_channel: bool = False, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's ``norm_pix_loss`` target: each patch at zero mean and unit variance (population variance, ``eps``).

    Args:
        patches: (B, L, P * C) from :func:`patchify` (channel last within a patch).
        channels: C, the image's channels.
        per_channel: normalise each channel of a patch separately (multi-modal MRI); else the whole patch.
        eps: added to the variance.

    Returns:
        ``(normalised, mean, std)``, each (B, L, P * C): ``patches == normalised * std + mean``, so a prediction of
        the normalised target is de-normalised with the true patch's ``mean`` and ``std``.
    """
    b, length, pc = patches.shape
    t = patches.reshape(b, length, pc // channels, channels) if per_channel else patches.unsqueeze(-1)  # (B, L, P, C|1)
    mean = t.mean(dim=2, keepdim=True)
    std = (t.var(dim=2, keepdim=True, correction=0) + eps).sqrt()
    normalised = ((t - mean) / std).reshape(b, length, pc)
    return normalised, mean.expand_as(t).reshape(b, length, pc), std.expand_as(t).reshape(b, length, pc)


def random_mask_ids(
    batch: int,
    length: int,
    mask_ratio: float,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw MAE's random mask: keep ``int(length * (1 - mask_ratio))`` tokens per sample (argsort of uniform noise).

    Returns:
        ``ids_keep`` (B, L_keep) indices of the kept tokens, mask (B, L) with 1 = hidden, ``ids_restore`` (B, L) that
        unshuffles ``cat([kept, hidden])`` back to token order.
    """
    len_keep = int(length * (1 - mask_ratio))
    noise = torch.rand(batch, length, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = (ids_restore >= len_keep).to(noise.dtype if dtype is None else dtype)  # (B, L), original token order
    return ids_shuffle[:, :len_keep], mask, ids_restore


def random_masking(x: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random ``int(L * (1 - mask_ratio))`` tokens per sample (argsort of uniform noise on x's device).

    Args:
        x: (B, L, D) tokens.
        mask_ratio: fraction of tokens hidden.

    Returns:
        kept tokens (B, L_keep, D), mask (B, L) with 1 = hidden, ``ids_restore`` (B, L) that unshuffles.
    """
    b, length, d = x.shape
    ids_keep, mask, ids_restore = random_mask_ids(b, length, mask_ratio, x.device, x.dtype)
    kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))  # (B, L_keep, D)
    return kept, mask, ids_restore


class MaskedAutoencoderViT(nn.Module):
    """MAE: a ViT encoder on the visible patches and a light transformer decoder that predicts the hidden ones.

    He et al., CVPR 2022 (https://arxiv.org/abs/2111.06377); medical self pre-training as in Zhou et al., ISBI 2023
    (https://arxiv.org/abs/2203.05573). The encoder is a :class:`~shared_networks.networks.vit.ViTEncoder` stored as
    ``self.encoder``, so its weights hand off to the fine-tuning networks key for key. Its state dict records the
    pre-training geometry beside the weights (``geometry.img_size``, ``geometry.patch_size``, ``geometry.grid_size``,
    ``geometry.spatial_dims``: integer tensors, a :class:`~shared_networks.networks.vit.GeometryRecord`), so the
    hand-off lays the position embedding out on the grid it was trained on, whatever the fine-tuning ROI.

    ``forward`` always returns ``(pred, mask)``: pred (B, L, P * C) in :func:`patchify` layout, mask (B, L) with
    1 on hidden patches. The loss is :class:`MaskedPatchLoss`.

    Args:
        in_channels: image channels C.
        img_size: spatial input size.
        patch_size: patch side.
        hidden_size, num_layers, num_heads, mlp_dim: encoder width, depth, heads, MLP width.
        decoder_hidden_size, decoder_num_layers, decoder_num_heads, decoder_mlp_dim: decoder shape.
        mask_ratio: fraction of patches hidden, in (0, 1).
        qkv_bias: bias in the qkv projections.
        cls_token: give the encoder a class token (used by the classification fine-tuning).
        spatial_dims: 2 or 3.
    """

    __jit_unused_properties__ = ["mask_ratio", "patch_size", "img_size"]  # not compiled by torch.jit.script

    def __init__(
        self,
        in_channels: int,
        img_size: Sequence[int] | int,
        patch_size: Sequence[int] | int = 16,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        decoder_hidden_size: int = 384,
        decoder_num_layers: int = 8,
        decoder_num_heads: int = 16,
        decoder_mlp_dim: int | None = None,
        mask_ratio: float = 0.75,
        qkv_bias: bool = True,
        cls_token: bool = False,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        self.encoder = ViTEncoder(
            in_channels,
            img_size,
            patch_size,
            hidden_size,
            num_layers,
            num_heads,
            mlp_dim,
            qkv_bias,
            cls_token=cls_token,
            learnable_pos_embed=False,
            spatial_dims=spatial_dims,
        )
        self.geometry = GeometryRecord(self.encoder.img_size, self.encoder.patch_size)  # saved with the weights
        self.mask_ratio = mask_ratio  # validated by the property setter
        self.in_channels = in_channels
        self.decoder_embed = nn.Linear(hidden_size, decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_hidden_size))
        self.decoder_pos_embed = nn.Parameter(
            sincos_pos_embed(self.encoder.grid_size, decoder_hidden_size), requires_grad=False
        )  # (1, L, Dd)
        dec_mlp = decoder_mlp_dim or 4 * decoder_hidden_size
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_hidden_size, decoder_num_heads, dec_mlp, qkv_bias) for _ in range(decoder_num_layers)
        )
        self.decoder_norm = nn.LayerNorm(decoder_hidden_size, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_hidden_size, math.prod(self.encoder.patch_size) * in_channels)
        for m in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            m.apply(init_vit_weights)
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_load_state_dict_pre_hook(refuse_non_finite)  # NaN/inf weights, from any loader

    @property
    def mask_ratio(self) -> float:
        return self._mask_ratio

    @mask_ratio.setter
    def mask_ratio(self, value: float) -> None:
        if not 0.0 < value < 1.0:
            raise ValueError(f"mask_ratio is the fraction of patches hidden and must be in (0, 1), got {value}.")
        if int(self.encoder.num_patches * (1 - value)) < 1:
            raise ValueError(f"mask_ratio {value} leaves no visible patch out of {self.encoder.num_patches}.")
        self._mask_ratio = float(value)

    @property
    def patch_size(self) -> tuple[int, ...]:
        return self.encoder.patch_size

    @property
    def img_size(self) -> tuple[int, ...]:
        return self.encoder.img_size

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, L, P * C)."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, P * C) -> (B, C, *S)."""
        return unpatchify(x, self.patch_size, self.img_size, self.in_channels)

    def forward_encoder(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C, *S) -> latent (B, prefix + L_keep, D), mask (B, L), ids_restore (B, L)."""
        ids_keep, mask, ids_restore = random_mask_ids(
            imgs.shape[0], self.encoder.num_patches, self._mask_ratio, imgs.device, imgs.dtype
        )
        kept = self.encoder.embed_subset(imgs, ids_keep)  # (B, L_keep, D): only visible patches are embedded
        return self.encoder.forward_tokens(kept), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent (B, prefix + L_keep, D) -> pred (B, L, P * C)."""
        prefix = self.encoder.num_prefix_tokens
        x = self.decoder_embed(latent)  # (B, prefix + L_keep, Dd)
        b, n_vis = x.shape[0], x.shape[1] - prefix
        length = ids_restore.shape[1]
        x_ = torch.cat([x[:, prefix:], self.mask_token.expand(b, length - n_vis, -1)], dim=1)  # (B, L, Dd)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2])) + self.decoder_pos_embed
        x = torch.cat([x[:, :prefix], x_], dim=1)  # (B, prefix + L, Dd)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, prefix:]  # (B, L, P * C)

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent, mask, ids_restore = self.forward_encoder(imgs)
        return self.forward_decoder(latent, ids_restore), mask


class MaskedPatchLoss(nn.Module):
    """MAE loss: MSE between prediction and (per-patch normalised) target pixels, on hidden patches only.

    Takes the network output ``(pred, mask)`` and the image, so it plugs into ``monai.engines.SupervisedTrainer``
    as ``loss_function(network(image), image)``.

    Args:
        patch_size: the MAE's patch size (one int per spatial axis, or one int).
        spatial_dims: 2 or 3.
        norm_pix_loss: normalise each target patch to zero mean, unit variance (population variance, eps 1e-6).
        per_channel: normalise each channel of a patch separately (multi-modal MRI); ignored without norm_pix_loss.
    """

    def __init__(
        self,
        patch_size: Sequence[int] | int,
        spatial_dims: int = 3,
        norm_pix_loss: bool = True,
        per_channel: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        self.patch_size = tuple(patch_size) if isinstance(patch_size, Sequence) else (patch_size,) * spatial_dims
        self.norm_pix_loss = norm_pix_loss
        self.per_channel = per_channel

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, L, P * C) regression target."""
        t = patchify(imgs, self.patch_size)
        if not self.norm_pix_loss:
            return t
        return normalize_patches(t, imgs.shape[1], self.per_channel)[0]

    def forward(self, output: tuple[torch.Tensor, torch.Tensor], imgs: torch.Tensor) -> torch.Tensor:
        pred, mask = output
        per_patch = ((pred - self.target(imgs)) ** 2).mean(dim=-1)  # (B, L)
        return (per_patch * mask).sum() / mask.sum()
