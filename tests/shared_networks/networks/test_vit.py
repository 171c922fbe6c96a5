from __future__ import annotations

import pytest
import torch

from shared_networks.networks.vit import Attention, ViTEncoder, attention_matmul, sincos_pos_embed

SMALL = dict(patch_size=4, hidden_size=48, num_layers=3, num_heads=4, mlp_dim=96)


@pytest.mark.parametrize("spatial_dims,img", [(2, (16, 8)), (3, (16, 8, 12))])
def test_forward_shapes(spatial_dims, img):
    enc = ViTEncoder(2, img, spatial_dims=spatial_dims, cls_token=True, **SMALL)
    x = torch.randn(2, 2, *img)
    n_tokens = torch.Size(img).numel() // 4**spatial_dims
    assert enc.forward_features(x).shape == (2, n_tokens + 1, 48)
    final, inter = enc.forward_intermediates(x, [2, 0])
    assert final.shape == (2, n_tokens + 1, 48)
    assert [t.shape for t in inter] == [(2, n_tokens, 48)] * 2
    # the last block's output, normalised, is the final output
    _, (last,) = enc.forward_intermediates(x, [2])
    torch.testing.assert_close(enc.norm(last), final[:, 1:])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_sincos_shape_and_values(spatial_dims):
    grid = (3, 4, 2)[:spatial_dims]
    pe = sincos_pos_embed(grid, 12 if spatial_dims == 2 else 12)
    assert pe.shape == (1, torch.Size(grid).numel(), 12)
    # token 0 is at the origin: sin 0 = 0 and cos 0 = 1 on every axis
    per_axis = 12 // spatial_dims
    for a in range(spatial_dims):
        torch.testing.assert_close(pe[0, 0, a * per_axis : a * per_axis + per_axis // 2], torch.zeros(per_axis // 2))
    # distinct positions get distinct embeddings
    assert torch.unique(pe[0], dim=0).shape[0] == pe.shape[1]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_channels=1, img_size=(16, 15), spatial_dims=2), "multiple of patch_size"),
        (dict(in_channels=1, img_size=16, spatial_dims=4), "spatial_dims"),
        (dict(in_channels=1, img_size=16, spatial_dims=3, hidden_size=40), "divisible by 6"),
        (dict(in_channels=1, img_size=16, spatial_dims=2, num_heads=5), "num_heads"),
        (dict(in_channels=0, img_size=16, spatial_dims=2), "in_channels"),
        (dict(in_channels=1, img_size=16, spatial_dims=2, drop_path_rate=1.0), "drop_path_rate"),
    ],
)
def test_ill_arguments(kwargs, match):
    args = {**SMALL, **kwargs}
    with pytest.raises(ValueError, match=match):
        ViTEncoder(**args)


def test_wrong_input_size_is_refused():
    enc = ViTEncoder(1, (16, 16), spatial_dims=2, **SMALL)
    with pytest.raises(ValueError, match="spatial size"):
        enc(torch.randn(1, 1, 16, 20))


def test_bad_intermediate_index():
    enc = ViTEncoder(1, (16, 16), spatial_dims=2, **SMALL)
    with pytest.raises(ValueError, match="out of range"):
        enc.forward_intermediates(torch.randn(1, 1, 16, 16), [3])


def test_attention_in_bf16_on_the_cpu_uses_matmuls_and_matches_fp32(monkeypatch):
    torch.manual_seed(0)
    attn = Attention(64, num_heads=4)
    x = torch.randn(3, 50, 64)
    q, k, v = torch.randn(3, 2, 4, 50, 16).unbind(0)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(attention_matmul(q, k, v), expected, atol=1e-5)  # the same function as SDPA in fp32
    reference = attn(x)  # fp32: SDPA
    x_grad = x.clone().requires_grad_()

    def refuse(*args, **kwargs):
        raise AssertionError("bf16 on the CPU must not take scaled_dot_product_attention")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", refuse)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x_grad)
    assert out.dtype == torch.bfloat16 and out.shape == reference.shape
    assert torch.allclose(out.float(), reference, atol=0.03, rtol=0.03)
    out.float().sum().backward()
    assert x_grad.grad is not None and torch.isfinite(x_grad.grad).all() and x_grad.grad.abs().sum() > 0
    assert attn.qkv.weight.grad is not None and attn.qkv.weight.grad.abs().sum() > 0
