"""UNETR: a ViT encoder with a convolutional decoder fed by skip connections from intermediate blocks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from torch import nn

from shared_networks.networks.handoff import refuse_non_finite
from shared_networks.networks.vit import ViTEncoder

__all__ = ["UNETR", "default_skip_indices", "monai_unetr_state_dict"]


def default_skip_indices(num_layers: int, num_skips: int) -> tuple[int, ...]:
    """Evenly spaced 0-based block indices, (3, 6, 9) for 12 blocks and 3 skips as in the UNETR paper."""
    if num_skips == 0:
        return ()
    step = num_layers // (num_skips + 1)
    if step < 1:
        raise ValueError(f"{num_layers} blocks are too few for {num_skips} skip connections.")
    return tuple(step * (i + 1) for i in range(num_skips))


class UNETR(nn.Module):
    """UNETR with the patch size, depth and skip blocks as arguments, for 2D or 3D segmentation.

    Hatamizadeh et al., "UNETR: Transformers for 3D Medical Image Segmentation", WACV 2022
    (https://arxiv.org/abs/2103.10504). With patch 16 there are log2(16) - 1 = 3 skips from the encoder (upsampled to
    1/2, 1/4 and 1/8 resolution), one from the image itself, and the final tokens at 1/16: the published network.
    Other power-of-two patches get log2(patch) - 1 skips. Returns logits (B, out_channels, *S).

    Args:
        in_channels: image channels.
        out_channels: classes, background included.
        img_size: spatial input size (the training ROI; sliding-window inference covers larger images).
        patch_size: patch side, a power of two >= 2, same on every axis.
        hidden_size, num_layers, num_heads, mlp_dim, qkv_bias, drop_path_rate: encoder settings.
        skip_indices: 0-based encoder blocks feeding the skips, shallow to deep; evenly spaced by default.
        feature_size: decoder width at full resolution (doubles at every level down).
        norm_name: decoder normalisation (MONAI name).
        res_block: residual decoder blocks.
        spatial_dims: 2 or 3.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_size: Sequence[int] | int,
        patch_size: int = 16,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        skip_indices: Sequence[int] | None = None,
        feature_size: int = 16,
        norm_name: str | tuple = "instance",
        res_block: bool = True,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        if not isinstance(patch_size, int) or patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"UNETR patch_size must be one power of two >= 2 for all axes, got {patch_size}.")
        levels = int(math.log2(patch_size))
        skips = default_skip_indices(num_layers, levels - 1) if skip_indices is None else tuple(skip_indices)
        if len(skips) != levels - 1:
            raise ValueError(f"patch_size {patch_size} needs {levels - 1} skip_indices, got {skips}.")
        self.skip_indices = skips
        self.encoder = ViTEncoder(
            in_channels,
            img_size,
            patch_size,
            hidden_size,
            num_layers,
            num_heads,
            mlp_dim,
            qkv_bias,
            drop_path_rate,
            cls_token=False,
            learnable_pos_embed=True,
            spatial_dims=spatial_dims,
        )
        for i in skips:
            if not 0 <= i < num_layers:
                raise ValueError(f"skip index {i} out of range for {num_layers} blocks.")
        common = dict(spatial_dims=spatial_dims, kernel_size=3, norm_name=norm_name, res_block=res_block)
        self.stem = UnetrBasicBlock(in_channels=in_channels, out_channels=feature_size, stride=1, **common)
        # skip k (1-based) comes from the tokens at 1/patch and is upsampled to 1/2**k: 2**(levels-k) = 2 * 2**num_layer
        self.skips = nn.ModuleList(
            UnetrPrUpBlock(
                in_channels=hidden_size,
                out_channels=feature_size * 2**k,
                num_layer=levels - k - 1,
                stride=1,
                upsample_kernel_size=2,
                conv_block=True,
                **common,
            )
            for k in range(1, levels)
        )
        # decoder level k (deep to shallow) upsamples to 1/2**k and joins the skip of the same resolution
        self.decoders = nn.ModuleList(
            UnetrUpBlock(
                in_channels=hidden_size if k == levels - 1 else feature_size * 2 ** (k + 1),
                out_channels=feature_size * 2**k,
                upsample_kernel_size=2,
                **common,
            )
            for k in reversed(range(levels))
        )
        self.out = UnetOutBlock(spatial_dims=spatial_dims, in_channels=feature_size, out_channels=out_channels)
        self.register_load_state_dict_pre_hook(refuse_non_finite)  # NaN/inf weights, from any loader (ckpt_export too)

    def tokens_to_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, D, h, w[, z]), a view in channels-last layout (no copy), as MONAI's UNETR has it.

        The decoder convolutions follow the layout of their input, and oneDNN runs them faster channels-last.
        """
        b, _, d = tokens.shape
        grid = list(self.encoder.grid_size)
        return tokens.reshape([b] + grid + [d]).movedim(-1, 1)  # (B, h, w[, z], D) -> (B, D, h, w[, z])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices: list[int] = []  # the tuple as a list, typed even when empty (patch 2: no skip) for TorchScript
        for i in self.skip_indices:
            indices.append(i)
        final, hidden = self.encoder.forward_intermediates(x, indices)
        # indexed loops over the ModuleLists: TorchScript has no zip(strict=) and no reversed()
        feats = [self.stem(x)]  # full resolution, then 1/2, 1/4, ... from the skips
        for k, blk in enumerate(self.skips):
            feats.append(blk(self.tokens_to_map(hidden[k])))
        y = self.tokens_to_map(final[:, self.encoder.num_prefix_tokens :])  # (B, D, *S/patch)
        for k, dec in enumerate(self.decoders):
            y = dec(y, feats[len(feats) - 1 - k])  # deep to shallow
        return self.out(y)  # (B, out_channels, *S)


# our UNETR key prefix -> MONAI UNETR key prefix (monai.networks.nets.UNETR, patch 16, 12 blocks, skips 3/6/9)
_MONAI_UNETR_PREFIXES = (
    ("encoder.patch_embed.proj.", "vit.patch_embedding.patch_embeddings."),
    ("encoder.pos_embed", "vit.patch_embedding.position_embeddings"),
    ("encoder.norm.", "vit.norm."),
    ("encoder.blocks.", "vit.blocks."),
    ("stem.", "encoder1."),
    ("skips.0.", "encoder2."),
    ("skips.1.", "encoder3."),
    ("skips.2.", "encoder4."),
    ("decoders.0.", "decoder5."),
    ("decoders.1.", "decoder4."),
    ("decoders.2.", "decoder3."),
    ("decoders.3.", "decoder2."),
    ("out.", "out."),
)
_MONAI_BLOCK_PARTS = {"attn.proj.": "attn.out_proj.", "mlp.0.": "mlp.linear1.", "mlp.2.": "mlp.linear2."}


def monai_unetr_state_dict(model: UNETR) -> dict[str, torch.Tensor]:
    """Our UNETR's weights under the keys of ``monai.networks.nets.UNETR`` of the same size.

    Only the published configuration has a MONAI counterpart: 3D, patch 16, 12 blocks, skips (3, 6, 9) and no class
    token; build MONAI's with ``qkv_bias`` equal to ours and the same ``feature_size``, ``norm_name`` and
    ``res_block``, then ``load_state_dict(..., strict=False)``: the only keys left unset are MONAI's unused
    ``norm_cross_attn`` LayerNorms. For equal outputs also set MONAI's LayerNorm ``eps`` to ours (1e-6; MONAI: 1e-5).
    """
    enc = model.encoder
    if (enc.spatial_dims, enc.patch_size, enc.num_layers, model.skip_indices) != (3, (16,) * 3, 12, (3, 6, 9)):
        raise ValueError(
            "only a 3D UNETR with patch 16, 12 blocks and skips (3, 6, 9) maps onto monai.networks.nets.UNETR, got "
            f"spatial_dims={enc.spatial_dims}, patch {enc.patch_size}, {enc.num_layers} blocks, skips "
            f"{model.skip_indices}."
        )
    out = {}
    for key, value in model.state_dict().items():
        for ours, theirs in _MONAI_UNETR_PREFIXES:
            if key.startswith(ours):
                new = theirs + key[len(ours) :]
                break
        else:
            raise AssertionError(f"no MONAI UNETR key for {key}")
        if key.startswith("encoder.blocks."):
            for part, monai_part in _MONAI_BLOCK_PARTS.items():
                new = new.replace(f".{part}", f".{monai_part}")
        out[new] = value
    return out
