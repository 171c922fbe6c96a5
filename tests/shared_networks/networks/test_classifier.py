from __future__ import annotations

import pytest
import torch

from shared_networks.networks.classifier import ViTClassifier

SMALL = dict(patch_size=4, hidden_size=48, num_layers=2, num_heads=4, mlp_dim=96)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("pool", ["avg", "cls"])
def test_shapes_and_gradients(spatial_dims, pool):
    torch.manual_seed(0)
    img = (8, 12, 8)[:spatial_dims]
    net = ViTClassifier(1, 14, img, pool=pool, spatial_dims=spatial_dims, **SMALL)
    y = net(torch.randn(3, 1, *img))
    assert isinstance(y, torch.Tensor) and y.shape == (3, 14)
    with torch.no_grad():
        net.head.weight.normal_()  # the head starts near zero; give the encoder gradient something to carry
    net(torch.randn(3, 1, *img)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert (net.encoder.cls_token is not None) == (pool == "cls")


def test_ill_arguments():
    with pytest.raises(ValueError, match="pool"):
        ViTClassifier(1, 14, (8, 8), pool="max", spatial_dims=2, **SMALL)
    with pytest.raises(ValueError, match="num_classes"):
        ViTClassifier(1, 0, (8, 8), spatial_dims=2, **SMALL)
