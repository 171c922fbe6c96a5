"""Vision Transformer building blocks for 2D and 3D images, shared by the MAE and the fine-tuning networks.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (https://arxiv.org/abs/2010.11929).
Shape alphabet: B batch, C channels, L tokens, D width, H/W/Z spatial.

The forward passes compile with ``torch.jit.script`` (model-zoo's TorchScript check scripts ``network_def``): sizes
are ``list[int]`` arguments, reshapes take lists, and no set, ``math.prod``, starred argument or ``zip(strict=)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import Conv
from monai.networks.layers import DropPath as MonaiDropPath
from monai.utils import ensure_tuple_rep
from torch import nn

__all__ = [
    "PatchEmbed",
    "Attention",
    "attention_matmul",
    "Block",
    "DropPath",
    "ViTEncoder",
    "GeometryRecord",
    "sincos_pos_embed",
    "check_image_size",
    "patchify",
    "size_repr",
]


def check_image_size(img_size: Sequence[int] | int, patch_size: Sequence[int] | int, spatial_dims: int):
    """Validate and expand ``img_size`` / ``patch_size`` to tuples; returns (img_size, patch_size, grid_size)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    img = ensure_tuple_rep(img_size, spatial_dims)
    patch = ensure_tuple_rep(patch_size, spatial_dims)
    for i, p in zip(img, patch, strict=True):
        if p < 1 or i < p or i % p != 0:
            raise ValueError(f"img_size {img} must be a positive multiple of patch_size {patch} in every dimension.")
    grid = tuple(i // p for i, p in zip(img, patch, strict=True))
    return tuple(img), tuple(patch), grid


def size_repr(sizes: list[int]) -> str:
    """``repr(tuple(sizes))``, also in TorchScript (which cannot make a tuple of a list): ``(48, 48)``, ``(16,)``."""
    inner = ", ".join([str(s) for s in sizes])
    return f"({inner},)" if len(sizes) == 1 else f"({inner})"


class GeometryRecord(nn.Module):
    """The image size, patch size, token grid and spatial dimensions a network was built for, kept as integer buffers
    in its state dict (``<prefix>img_size``, ``patch_size``, ``grid_size``: (N,) int64; ``spatial_dims``: () int64).

    A checkpoint then says which grid its position embedding is laid out on, and stays a plain state dict of tensors
    (``torch.load(weights_only=True)``, ``load_state_dict(strict=True)``, MONAI's ``CheckpointLoader``). Loading a
    state dict that records another geometry is an error naming both; a state dict written before the record existed
    loads as before (the network keeps its own values).

    Args:
        img_size: spatial input size, one int per axis.
        patch_size: patch side, one int per axis.
    """

    KEYS = ("img_size", "patch_size", "grid_size", "spatial_dims")

    def __init__(self, img_size: Sequence[int], patch_size: Sequence[int]) -> None:
        super().__init__()
        img, patch, grid = check_image_size(img_size, patch_size, len(img_size))
        for name, value in (("img_size", img), ("patch_size", patch), ("grid_size", grid)):
            self.register_buffer(name, torch.tensor(value, dtype=torch.int64))
        self.register_buffer("spatial_dims", torch.tensor(len(img), dtype=torch.int64))
        self.register_load_state_dict_pre_hook(_check_geometry)

    def as_dict(self) -> dict[str, tuple[int, ...] | int]:
        """``{"img_size": (H, W[, Z]), "patch_size": ..., "grid_size": ..., "spatial_dims": n}``."""
        return {k: tuple(v.tolist()) if v.ndim else int(v) for k, v in self.named_buffers()}


def _check_geometry(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """Load-state-dict pre-hook of :class:`GeometryRecord`: a state dict without the record (written before it
    existed) keeps the module's values; a record of another geometry is an error."""
    theirs, ours = {}, module.as_dict()
    for name, value in module.named_buffers():
        key = prefix + name
        if key not in state_dict:
            state_dict[key] = value  # no record in the file: nothing to compare, nothing missing
            continue
        given = state_dict[key]
        theirs[name] = tuple(given.tolist()) if given.ndim else int(given)
    if any(theirs[k] != ours[k] for k in theirs):
        error_msgs.append(
            f"the state dict records the geometry {theirs} ({prefix or 'top level'}), this network is built for "
            f"{ours}: its position embedding is laid out on another token grid."
        )


def sincos_pos_embed(grid_size: Sequence[int], embed_dim: int) -> torch.Tensor:
    """Fixed 2D/3D sine-cosine position embedding.

    Each spatial axis gets ``embed_dim / spatial_dims`` channels (half sine, half cosine), tokens in row-major order
    of ``grid_size`` (the order of ``PatchEmbed``'s flattening).

    Args:
        grid_size: tokens per axis, (h, w) or (h, w, z).
        embed_dim: width D; must be divisible by ``2 * len(grid_size)``.

    Returns:
        (1, L, D) float32 tensor, L = prod(grid_size).
    """
    n = len(grid_size)
    if embed_dim % (2 * n) != 0:
        raise ValueError(f"embed_dim {embed_dim} must be divisible by {2 * n} for a {n}D sin-cos position embedding.")
    dim_axis = embed_dim // n
    omega = 1.0 / 10000 ** (torch.arange(dim_axis // 2, dtype=torch.float64) / (dim_axis / 2.0))  # (D/2n,)
    coords = torch.meshgrid(*[torch.arange(g, dtype=torch.float64) for g in grid_size], indexing="ij")
    parts = []
    for c in coords:
        out = c.reshape(-1, 1) * omega.reshape(1, -1)  # (L, D/2n)
        parts += [torch.sin(out), torch.cos(out)]
    return torch.cat(parts, dim=1).float().unsqueeze(0)  # (1, L, D)


def patchify(imgs: torch.Tensor, patch_size: list[int]) -> torch.Tensor:
    """(B, C, H, W[, Z]) -> (B, L, P * C), tokens in ``PatchEmbed`` order, each patch laid out (voxels, channel).

    The flattening matches a convolution with kernel = stride = patch: token l covers the patch at grid position
    ``unravel(l, grid)``, and ``patchify(x) @ w.permute(0, 2, ..., 1).reshape(D, -1).T`` equals the conv embedding.
    ``patch_size`` has one int per spatial axis (a list, or a tuple in eager mode).
    """
    n = imgs.dim() - 2
    if len(patch_size) != n:
        raise ValueError(f"patch_size {patch_size} must have one int per spatial axis of the {n}D image.")
    shape = [imgs.shape[0], imgs.shape[1]]
    for i in range(n):
        shape += [imgs.shape[2 + i] // patch_size[i], patch_size[i]]
    x = imgs.reshape(shape)  # (B, C, h, p, w, p[, z, p])
    grid_axes = [2 + 2 * i for i in range(n)]
    patch_axes = [3 + 2 * i for i in range(n)]
    x = x.permute([0] + grid_axes + patch_axes + [1])  # (B, h, w[, z], p, p[, p], C)
    return x.flatten(1, n).flatten(2)  # (B, L, P * C)


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens with one strided convolution: (B, C, *S) -> (B, L, D), row-major order.

    :meth:`forward_patches` applies the same map to patches that :func:`patchify` cut out, as a matrix product with
    the convolution kernel; embedding only a subset of patches (MAE's visible ones) then costs only that subset.
    """

    def __init__(self, in_channels: int, patch_size: Sequence[int], embed_dim: int, spatial_dims: int = 3) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = Conv[Conv.CONV, spatial_dims](in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def linear_weight(self) -> torch.Tensor:
        """The conv kernel as a (D, P * C) matrix in :func:`patchify` layout (a view when C = 1)."""
        w = self.proj.weight  # (D, C, p, p[, p])
        return w.movedim(1, -1).reshape(w.shape[0], -1)  # (D, p, p[, p], C) -> (D, P * C)

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, P * C) patches in :func:`patchify` layout -> (B, N, D), equal to the conv on those patches."""
        return F.linear(patches, self.linear_weight(), self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, h, w[, z]) -> (B, L, D)


def attention_matmul(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` with plain matmuls, for (B, h, L, d) inputs.

    On the CPU in bf16 this is 2.6-5.7x faster, forward and backward, than ``scaled_dot_product_attention``'s CPU
    flash kernel at the ViT-B encoder's and MAE decoder's shapes (``benchmarks/bench_attention.py``); it keeps the
    (B, h, L, L) probabilities for backward, as MONAI's attention does. In fp32 on the CPU and on CUDA the fused
    kernels win.
    """
    return ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and ``scaled_dot_product_attention`` (plain matmuls for
    bf16 on the CPU, see :func:`attention_matmul`)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"hidden size {dim} must be divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)  # (3,B,h,L,d)
        if qkv.device.type == "cpu" and qkv.dtype == torch.bfloat16:
            x = attention_matmul(qkv[0], qkv[1], qkv[2])
        else:
            x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, h, L, d)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class DropPath(MonaiDropPath):
    """MONAI's stochastic depth (same arguments, checks and random draws) with a forward TorchScript compiles: MONAI
    builds the mask shape as ``(1,) * (x.ndim - 1)``, a tuple of a length known only at run time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1 - self.drop_prob
        mask = x.new_empty([x.shape[0]] + [1] * (x.dim() - 1)).bernoulli_(keep_prob)  # (B, 1, ...)
        if keep_prob > 0.0 and self.scale_by_keep:
            mask.div_(keep_prob)
        return x * mask


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, qkv_bias: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_vit_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linears, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ViTEncoder(nn.Module):
    """ViT encoder for 2D or 3D images, the one encoder used in pre-training and in every fine-tuning network.

    Dosovitskiy et al., ICLR 2021 (https://arxiv.org/abs/2010.11929); sin-cos position embedding as in MAE
    (He et al., CVPR 2022, https://arxiv.org/abs/2111.06377).

    The position embedding holds patch tokens only (the class token, when enabled, carries none) and is initialised
    with the fixed sin-cos values; ``learnable_pos_embed`` decides whether it trains (False in MAE pre-training).

    Args:
        in_channels: image channels C.
        img_size: spatial size of the input, an int or one per axis.
        patch_size: patch side, an int or one per axis.
        hidden_size: width D.
        num_layers: number of transformer blocks.
        num_heads: attention heads.
        mlp_dim: hidden width of each block's MLP.
        qkv_bias: bias in the qkv projection.
        drop_path_rate: stochastic depth, linearly increasing over the blocks up to this value.
        cls_token: prepend a learnable class token.
        learnable_pos_embed: train the position embedding.
        spatial_dims: 2 or 3.
        final_norm: end with a LayerNorm (``norm``); without it ``norm`` is the identity and holds no weights (a
            global-pool classification head normalises the pooled feature instead, as in MAE's fine-tuning).
    """

    def __init__(
        self,
        in_channels: int,
        img_size: Sequence[int] | int,
        patch_size: Sequence[int] | int = 16,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        cls_token: bool = False,
        learnable_pos_embed: bool = True,
        spatial_dims: int = 3,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_layers < 1:
            raise ValueError(f"in_channels ({in_channels}) and num_layers ({num_layers}) must be positive.")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}.")
        self.img_size, self.patch_size, self.grid_size = check_image_size(img_size, patch_size, spatial_dims)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_prefix_tokens = 1 if cls_token else 0
        self.num_patches = math.prod(self.grid_size)  # L
        self.patch_embed = PatchEmbed(in_channels, self.patch_size, hidden_size, spatial_dims)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size)) if cls_token else None
        self.pos_embed = nn.Parameter(
            sincos_pos_embed(self.grid_size, hidden_size), requires_grad=learnable_pos_embed
        )  # (1, L, D)
        dpr = torch.linspace(0, drop_path_rate, num_layers).tolist()
        self.blocks = nn.ModuleList(Block(hidden_size, num_heads, mlp_dim, qkv_bias, dpr[i]) for i in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6) if final_norm else nn.Identity()
        self.apply(init_vit_weights)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a linear layer, as in MAE
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def check_input_size(self, x: torch.Tensor) -> None:
        """``ValueError`` naming both sizes unless x is (B, C, *img_size)."""
        if list(x.shape[2:]) != list(self.img_size):
            raise ValueError(f"expected input of spatial size {self.img_size}, got {size_repr(x.shape[2:])}.")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, L, D) patch tokens with position embedding, no class token."""
        self.check_input_size(x)
        return self.patch_embed(x) + self.pos_embed

    def embed_subset(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Embed only the patches at token indices ``ids``: (B, C, *S), (B, N) -> (B, N, D), no class token.

        Equal to ``gather(embed(x), ids)`` but costs N patches instead of L: the image is cut into patches
        (:func:`patchify`, one copy of the image), the N wanted ones are gathered and multiplied by the conv kernel.
        """
        self.check_input_size(x)
        patches = patchify(x, list(self.patch_size))  # (B, L, P * C)
        patches = torch.gather(patches, 1, ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))  # (B, N, P * C)
        pos = self.pos_embed.expand(x.shape[0], -1, -1)  # (B, L, D)
        pos = torch.gather(pos, 1, ids.unsqueeze(-1).expand(-1, -1, pos.shape[-1]))  # (B, N, D)
        return self.patch_embed.forward_patches(patches) + pos

    def prepend_prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, P + L, D), P = ``num_prefix_tokens``."""
        if self.cls_token is None:
            return tokens
        return torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L', D) embedded tokens (any subset) -> (B, P + L', D) after all blocks and the final norm (if any)."""
        x = self.prepend_prefix(tokens)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, P + L, D) tokens after the final norm (the last block's output without one)."""
        return self.forward_tokens(self.embed(x))

    def forward_intermediates(self, x: torch.Tensor, indices: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final tokens and the outputs of the blocks at ``indices`` (0-based, prefix tokens removed).

        Args:
            x: (B, C, *S) image.
            indices: block indices whose outputs are returned, in the order given (a list or a tuple in eager mode).

        Returns:
            (B, P + L, D) normalised final tokens, and a list of (B, L, D) block outputs.
        """
        for i in indices:
            if not 0 <= i < self.num_layers:
                raise ValueError(f"block index {i} out of range for {self.num_layers} blocks.")
        x = self.prepend_prefix(self.embed(x))
        found: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in indices:
                found[i] = x[:, self.num_prefix_tokens :]
        return self.norm(x), [found[i] for i in indices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
