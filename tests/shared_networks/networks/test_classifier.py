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


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_global_pool_follows_mae(spatial_dims):
    """pool="avg" as MAE's global_pool: patch tokens of the last block averaged before any final norm, then fc_norm,
    then the head; the encoder holds no final norm. pool="cls": the class token after the final norm, no fc_norm."""
    torch.manual_seed(0)
    img = (8, 12, 8)[:spatial_dims]
    x = torch.randn(2, 1, *img)
    net = ViTClassifier(1, 5, img, spatial_dims=spatial_dims, **SMALL).eval()
    with torch.no_grad():
        net.fc_norm.weight.normal_()
        net.fc_norm.bias.normal_()
        net.head.weight.normal_()
    assert isinstance(net.encoder.norm, torch.nn.Identity)
    assert not any(k.startswith("encoder.norm.") for k in net.state_dict())
    tokens = net.encoder.embed(x)
    for blk in net.encoder.blocks:
        tokens = blk(tokens)  # (B, L, D), no class token
    pooled = tokens.mean(dim=1)
    ln = (pooled - pooled.mean(-1, keepdim=True)) / (pooled.var(-1, keepdim=True, correction=0) + 1e-6).sqrt()
    expected = (ln * net.fc_norm.weight + net.fc_norm.bias) @ net.head.weight.T + net.head.bias
    torch.testing.assert_close(net(x), expected)

    cls = ViTClassifier(1, 5, img, pool="cls", spatial_dims=spatial_dims, **SMALL).eval()
    with torch.no_grad():
        cls.head.weight.normal_()
    tokens = cls.encoder.prepend_prefix(cls.encoder.embed(x))
    for blk in cls.encoder.blocks:
        tokens = blk(tokens)
    torch.testing.assert_close(cls(x), cls.head(cls.encoder.norm(tokens)[:, 0]))
    assert isinstance(cls.fc_norm, torch.nn.Identity) and "encoder.norm.weight" in cls.state_dict()


def test_weights_of_the_earlier_head_are_refused(tmp_path):
    """A model.pt fine-tuned with the earlier head (final norm on every token, then the average) computes another
    function: a strict or a lax load stops with a message instead of dropping the norm."""
    net = ViTClassifier(1, 3, (8, 8), spatial_dims=2, **SMALL)
    state = net.state_dict()
    torch.save(state, tmp_path / "model.pt")
    ViTClassifier(1, 3, (8, 8), spatial_dims=2, **SMALL).load_state_dict(
        torch.load(tmp_path / "model.pt", weights_only=True)
    )
    old = {**state, "encoder.norm.weight": torch.ones(48), "encoder.norm.bias": torch.zeros(48)}
    for strict in (True, False):
        with pytest.raises(RuntimeError, match="earlier average-pool head.*fine-tune again"):
            net.load_state_dict(old, strict=strict)
    cls = ViTClassifier(1, 3, (8, 8), pool="cls", spatial_dims=2, **SMALL)
    cls.load_state_dict(cls.state_dict())  # the class-token head keeps the final norm


def test_encoder_options_that_follow_from_pool_are_refused():
    with pytest.raises(ValueError, match="follow from pool"):
        ViTClassifier(1, 3, (8, 8), spatial_dims=2, final_norm=True, **SMALL)
