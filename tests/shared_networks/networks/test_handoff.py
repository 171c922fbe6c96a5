from __future__ import annotations

import logging

import pytest
import torch

from shared_networks.networks.classifier import ViTClassifier
from shared_networks.networks.handoff import interpolate_pos_embed, load_pretrained_encoder
from shared_networks.networks.mae import MaskedAutoencoderViT
from shared_networks.networks.unetr import UNETR
from shared_networks.networks.vit import sincos_pos_embed

ENC = dict(patch_size=4, hidden_size=48, num_layers=4, num_heads=4, mlp_dim=96)
DEC = dict(decoder_hidden_size=24, decoder_num_layers=1, decoder_num_heads=2)


def _mae(spatial_dims, img, cls_token=False, channels=1):
    torch.manual_seed(1)
    return MaskedAutoencoderViT(channels, img, spatial_dims=spatial_dims, cls_token=cls_token, **ENC, **DEC)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_unetr_loads_every_encoder_tensor(spatial_dims, tmp_path, caplog):
    img = (16,) * spatial_dims
    mae = _mae(spatial_dims, img)
    path = tmp_path / "mae.pt"
    torch.save({"network": mae.state_dict()}, path)
    net = UNETR(1, 3, img, spatial_dims=spatial_dims, feature_size=4, **ENC)
    with caplog.at_level(logging.INFO):
        report = load_pretrained_encoder(net, path)
    assert sorted(report.loaded) == sorted(net.encoder.state_dict())
    assert report.missing == [] and report.unexpected == [] and report.skipped_decoder > 0
    for k, v in mae.encoder.state_dict().items():
        assert torch.equal(net.encoder.state_dict()[k], v), k
    assert net.encoder.pos_embed.requires_grad  # learnable in fine-tuning, initialised from sin-cos
    assert "tensors loaded" in caplog.text


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_pos_embed_interpolated_when_roi_differs(spatial_dims):
    mae = _mae(spatial_dims, (16,) * spatial_dims)
    net = ViTClassifier(1, 14, (32,) * spatial_dims, spatial_dims=spatial_dims, **ENC)
    report = load_pretrained_encoder(net, mae.state_dict())
    assert net.encoder.pos_embed.shape == (1, 8**spatial_dims, 48)
    assert report.interpolated and "pos_embed" in report.loaded
    # linear interpolation stays inside each channel's source range and is not a freshly drawn sin-cos table
    src = mae.encoder.pos_embed.detach()[0]
    new = net.encoder.pos_embed.detach()[0]
    assert torch.all(new >= src.min(0).values - 1e-6) and torch.all(new <= src.max(0).values + 1e-6)
    assert not torch.allclose(new, sincos_pos_embed((8,) * spatial_dims, 48)[0])


def test_interpolate_identity_and_values():
    pe = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(1, 4, 3)
    assert torch.equal(interpolate_pos_embed(pe, (2, 2), (2, 2)), pe)
    up = interpolate_pos_embed(pe, (2, 2), (4, 4))
    assert up.shape == (1, 16, 3)
    # the mean over tokens is preserved by symmetric linear upsampling
    torch.testing.assert_close(up.mean(1), pe.mean(1))


def test_classifier_with_cls_token_from_mae_with_cls():
    mae = _mae(2, (16, 16), cls_token=True)
    net = ViTClassifier(1, 14, (16, 16), pool="cls", spatial_dims=2, **ENC)
    report = load_pretrained_encoder(net, mae.state_dict())
    assert "cls_token" in report.loaded and report.missing == []
    assert torch.equal(net.encoder.cls_token, mae.encoder.cls_token)


def test_cls_token_absent_in_checkpoint_is_reported():
    mae = _mae(2, (16, 16), cls_token=False)
    net = ViTClassifier(1, 14, (16, 16), pool="cls", spatial_dims=2, **ENC)
    assert load_pretrained_encoder(net, mae.state_dict()).missing == ["cls_token"]


def test_incomplete_checkpoint_raises(tmp_path):
    state = _mae(2, (16, 16)).state_dict()
    del state["encoder.blocks.3.attn.qkv.weight"]
    net = UNETR(1, 3, (16, 16), spatial_dims=2, feature_size=4, **ENC)
    with pytest.raises(ValueError, match="blocks.3.attn.qkv.weight"):
        load_pretrained_encoder(net, state)


def test_channel_mismatch_raises():
    state = _mae(2, (16, 16), channels=4).state_dict()
    net = UNETR(1, 3, (16, 16), spatial_dims=2, feature_size=4, **ENC)
    with pytest.raises(ValueError, match="patch_embed.proj.weight"):
        load_pretrained_encoder(net, state)


def test_unreadable_and_missing_files(tmp_path):
    net = UNETR(1, 3, (16, 16), spatial_dims=2, feature_size=4, **ENC)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_pretrained_encoder(net, tmp_path / "nope.pt")
    good = tmp_path / "good.pt"
    torch.save(_mae(2, (16, 16)).state_dict(), good)
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.pt"):
        load_pretrained_encoder(net, bad)
    with pytest.raises(ValueError, match="no 'encoder"):
        load_pretrained_encoder(net, {"foo.weight": torch.zeros(1)})
