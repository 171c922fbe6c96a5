"""``torch.jit.script`` of every network a bundle exports (model-zoo's TorchScript check scripts ``network_def``): the
scripted module computes the eager output, survives ``torch.jit.save`` / ``load`` and refuses a wrong input size
with the eager network's message."""

from __future__ import annotations

import re

import pytest
import torch
from monai.networks.layers import DropPath as MonaiDropPath

from shared_networks.networks.classifier import ViTClassifier
from shared_networks.networks.mae import MaskedAutoencoderViT
from shared_networks.networks.unetr import UNETR
from shared_networks.networks.vit import DropPath, ViTEncoder, size_repr

ENC = dict(patch_size=4, hidden_size=48, num_layers=3, num_heads=4, mlp_dim=96)
UNET = dict(hidden_size=48, num_layers=4, num_heads=4, mlp_dim=96, feature_size=4)

# name -> (network factory, input shape (B, C, *S))
NETWORKS = {
    "encoder-2d-cls-droppath": (
        lambda: ViTEncoder(1, (16, 12), cls_token=True, drop_path_rate=0.2, spatial_dims=2, **ENC),
        (2, 1, 16, 12),
    ),
    "encoder-3d-no-final-norm": (lambda: ViTEncoder(2, (8, 8, 12), final_norm=False, **ENC), (2, 2, 8, 8, 12)),
    "classifier-avg-2d": (lambda: ViTClassifier(1, 14, (16, 16), spatial_dims=2, **ENC), (3, 1, 16, 16)),
    "classifier-cls-3d": (
        lambda: ViTClassifier(1, 3, (8, 8, 8), pool="cls", drop_path_rate=0.1, **ENC),
        (2, 1, 8, 8, 8),
    ),
    "unetr-3d-1-channel": (
        lambda: UNETR(1, 14, (16, 16, 16), patch_size=8, drop_path_rate=0.1, **UNET),
        (1, 1, 16, 16, 16),
    ),
    "unetr-3d-4-channels": (
        lambda: UNETR(4, 3, (16, 16, 16), patch_size=8, skip_indices=[1, 3], **UNET),
        (2, 4, 16, 16, 16),
    ),
    "unetr-2d-patch-2-no-skip": (lambda: UNETR(1, 2, (8, 8), patch_size=2, spatial_dims=2, **UNET), (1, 1, 8, 8)),
}


def built(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    make, shape = NETWORKS[name]
    torch.manual_seed(0)
    net = make().eval()
    with torch.no_grad():  # a head that starts near zero would hide differences
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net, torch.randn(shape)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_scripted_equals_eager_and_round_trips(name, tmp_path):
    net, x = built(name)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        y = net(x)
        torch.testing.assert_close(scripted(x), y, rtol=1e-5, atol=1e-5)
        torch.jit.save(scripted, tmp_path / "net.ts")
        loaded = torch.jit.load(tmp_path / "net.ts")
        torch.testing.assert_close(loaded(x), y, rtol=1e-5, atol=1e-5)
    state, eager_state = loaded.state_dict(), net.state_dict()
    assert list(state) == list(eager_state)  # the same keys: checkpoints load into either
    assert all(torch.equal(state[k], v) for k, v in eager_state.items())


@pytest.mark.parametrize("name", ["encoder-2d-cls-droppath", "unetr-3d-1-channel"])
def test_scripted_refuses_a_wrong_input_size_with_the_eager_message(name):
    net, x = built(name)
    wrong = torch.randn(*x.shape[:-1], x.shape[-1] + 4)
    with pytest.raises(ValueError, match="expected input of spatial size") as eager:
        net(wrong)
    message = str(eager.value)
    assert message == f"expected input of spatial size {tuple(x.shape[2:])}, got {tuple(wrong.shape[2:])}."
    with pytest.raises(torch.jit.Error, match=re.escape(f"ValueError: {message}")):
        torch.jit.script(net)(wrong)


def test_scripted_training_draws_the_eager_drop_paths():
    net, x = built("encoder-2d-cls-droppath")
    net.train()
    scripted = torch.jit.script(net)
    torch.manual_seed(1)
    y = net(x)
    torch.manual_seed(1)
    torch.testing.assert_close(scripted(x), y, rtol=1e-5, atol=1e-5)
    torch.manual_seed(2)
    assert not torch.allclose(net(x), y)  # the paths are dropped at random


@pytest.mark.parametrize("spatial_dims,cls_token", [(2, True), (3, False)])
def test_scripted_mae_draws_the_eager_mask(spatial_dims, cls_token, tmp_path):
    """The pre-training network scripts too: with the same seed, the same mask and prediction, after a round trip."""
    img = (16, 8, 8)[:spatial_dims]
    torch.manual_seed(0)
    decoder = dict(decoder_hidden_size=24, decoder_num_layers=1, decoder_num_heads=2)
    mae = MaskedAutoencoderViT(2, img, cls_token=cls_token, spatial_dims=spatial_dims, **ENC, **decoder)
    x = torch.randn(2, 2, *img)
    torch.jit.save(torch.jit.script(mae), tmp_path / "mae.ts")
    scripted = torch.jit.load(tmp_path / "mae.ts")
    torch.manual_seed(1)
    pred, mask = mae(x)
    torch.manual_seed(1)
    scripted_pred, scripted_mask = scripted(x)
    assert torch.equal(scripted_mask, mask) and mask.sum() == mask.numel() - int(mask.shape[1] * 0.25) * 2
    torch.testing.assert_close(scripted_pred, pred, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 5, 6), (3, 2, 4, 4)])
def test_drop_path_is_monais(shape):
    """The same mask draws, scaling and argument check as MONAI's DropPath, in training and evaluation."""
    x = torch.randn(shape)
    ours, theirs = DropPath(0.3), MonaiDropPath(0.3)
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        torch.manual_seed(0)
        expected = theirs(x)
        torch.manual_seed(0)
        assert torch.equal(ours(x), expected)
    with pytest.raises(ValueError, match="Drop path prob"):
        DropPath(1.5)


@pytest.mark.parametrize("sizes", [[], [16], [16, 20], [8, 8, 12]])
def test_size_repr_is_the_tuples(sizes):
    assert size_repr(sizes) == repr(tuple(sizes)) == torch.jit.script(size_repr)(sizes)
