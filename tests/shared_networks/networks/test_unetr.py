from __future__ import annotations

import pytest
import torch

from shared_networks.networks.unetr import UNETR, default_skip_indices

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


def test_weights_map_onto_monai_unetr():
    """Our weights loaded into monai.networks.nets.UNETR of the same size give the same logits."""
    from monai.networks.nets import UNETR as MonaiUNETR

    from shared_networks.networks.unetr import monai_unetr_state_dict

    torch.manual_seed(0)
    ours = UNETR(1, 3, 32, hidden_size=48, num_heads=4, mlp_dim=96, feature_size=4).eval()
    theirs = MonaiUNETR(1, 3, (32,) * 3, feature_size=4, hidden_size=48, mlp_dim=96, num_heads=4, qkv_bias=True)
    result = theirs.load_state_dict(monai_unetr_state_dict(ours), strict=False)
    assert not result.unexpected_keys
    assert all(".norm_cross_attn." in k for k in result.missing_keys)  # MONAI's unused LayerNorms
    for m in theirs.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-6
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(theirs.eval()(x), ours(x), rtol=1e-4, atol=1e-4)


def test_monai_mapping_refuses_other_shapes():
    from shared_networks.networks.unetr import monai_unetr_state_dict

    with pytest.raises(ValueError, match="patch 16"):
        monai_unetr_state_dict(UNETR(1, 2, 32, patch_size=8, hidden_size=48, num_heads=4, mlp_dim=96, feature_size=4))
