from __future__ import annotations

import pytest
import torch

from shared_networks.unetr import UNETR, default_skip_indices

SMALL = dict(hidden_size=48, num_layers=4, num_heads=4, mlp_dim=96, feature_size=4)


@pytest.mark.parametrize(
    "spatial_dims,img,patch",
    [(2, (32, 16), 8), (3, (16, 16, 32), 16), (3, (8, 8, 8), 4), (2, (8, 8), 2)],
)
def test_shapes_and_gradients(spatial_dims, img, patch):
    torch.manual_seed(0)
    net = UNETR(2, 5, img, patch_size=patch, spatial_dims=spatial_dims, **SMALL)
    x = torch.randn(2, 2, *img)
    y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 5, *img)
    y.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_skip_indices_are_used():
    net = UNETR(1, 2, (16, 16), patch_size=8, spatial_dims=2, skip_indices=[0, 2], **SMALL)
    assert net.skip_indices == (0, 2) and len(net.skips) == 2
    # the output depends on the chosen blocks: changing block 3 (not a skip, but the last) changes it too
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        before = net(x)
        net.encoder.blocks[1].mlp[2].bias.add_(1.0)  # block 1 feeds block 2, a skip
        assert not torch.allclose(before, net(x))


def test_default_skips():
    assert default_skip_indices(12, 3) == (3, 6, 9)
    assert default_skip_indices(8, 3) == (2, 4, 6)
    assert default_skip_indices(5, 0) == ()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(patch_size=12), "power of two"),
        (dict(patch_size=(16, 16)), "power of two"),
        (dict(skip_indices=[1, 2]), "needs 3 skip_indices"),
        (dict(skip_indices=[1, 2, 7]), "out of range"),
    ],
)
def test_ill_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNETR(1, 2, (32, 32, 32), **{**SMALL, **kwargs})
