from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from shared_networks.networks.classifier import ViTClassifier
from shared_networks.networks.handoff import (
    NonFiniteError,
    interpolate_pos_embed,
    load_pretrained_encoder,
    read_geometry,
)
from shared_networks.networks.mae import MaskedAutoencoderViT
from shared_networks.networks.unetr import UNETR

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


def _known_grid(pos_embed, grid, size, mode):
    """Reference resize: the embedding laid out on its known grid, resized by F.interpolate, flattened again."""
    x = pos_embed.reshape(1, *grid, pos_embed.shape[-1]).permute(0, len(grid) + 1, *range(1, len(grid) + 1))
    y = F.interpolate(x, size=size, mode=mode, align_corners=False)  # (1, D, *size)
    return y.flatten(2).transpose(1, 2)  # (1, L', D)


def _legacy(state):
    """The state dict as written before the geometry record existed."""
    return {k: v for k, v in state.items() if not k.startswith("geometry.")}


def test_mae_checkpoint_records_its_geometry(tmp_path):
    mae = _mae(3, (16, 16, 32))
    torch.save(mae.state_dict(), tmp_path / "mae.pt")
    state = torch.load(tmp_path / "mae.pt", weights_only=True)  # stock loader, weights only
    assert state["geometry.img_size"].tolist() == [16, 16, 32] and state["geometry.patch_size"].tolist() == [4, 4, 4]
    assert state["geometry.grid_size"].tolist() == [4, 4, 8] and int(state["geometry.spatial_dims"]) == 3
    assert read_geometry(state) == {
        "img_size": (16, 16, 32),
        "patch_size": (4, 4, 4),
        "grid_size": (4, 4, 8),
        "spatial_dims": 3,
    }
    assert read_geometry(_legacy(state)) is None
    _mae(3, (16, 16, 32)).load_state_dict(state, strict=True)
    _mae(3, (16, 16, 32)).load_state_dict(_legacy(state), strict=True)  # files written before the record still load
    # same token count (128), other layout: a strict load names both geometries instead of loading a scrambled grid
    with pytest.raises(RuntimeError, match=r"records the geometry .*\(16, 16, 32\).*built for .*\(32, 16, 16\)"):
        _mae(3, (32, 16, 16)).load_state_dict(state, strict=True)


def test_non_cubic_grid_of_equal_token_count_is_interpolated():
    """Pre-trained on 16 x 16 x 32 (grid 4 x 4 x 8), fine-tuned on 16 x 32 x 16 (grid 4 x 8 x 4): 128 tokens each. The
    old hand-off copied the embedding unchanged, i.e. read the 4 x 4 x 8 table as 4 x 8 x 4."""
    mae = _mae(3, (16, 16, 32))
    h, w, z = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), torch.arange(8.0), indexing="ij")
    ramps = torch.stack([h, w, z], -1).reshape(1, 128, 3)  # channels 0-2: the token's grid coordinate
    with torch.no_grad():
        mae.encoder.pos_embed.copy_(torch.cat([ramps, torch.randn(1, 128, 45)], -1))
    net = UNETR(1, 3, (16, 32, 16), spatial_dims=3, feature_size=6, **ENC)
    report = load_pretrained_encoder(net, mae.state_dict())
    assert report.src_grid == (4, 4, 8)
    assert report.interpolated == ["pos_embed (4, 4, 8)->(4, 8, 4)"]
    new = net.encoder.pos_embed.detach()
    torch.testing.assert_close(new, _known_grid(mae.encoder.pos_embed.detach(), (4, 4, 8), (4, 8, 4), "trilinear"))
    # by hand (align_corners=False): target index j of an axis samples source coordinate (j + 0.5) * src / dst - 0.5,
    # clamped to the grid; the ramps give that coordinate back
    grid = new[0, :, :3].reshape(4, 8, 4, 3)
    torch.testing.assert_close(grid[:, 0, 0, 0], torch.arange(4.0))  # h: 4 -> 4, unchanged
    torch.testing.assert_close(grid[0, :, 0, 1], torch.tensor([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]))  # w: 4 -> 8
    torch.testing.assert_close(grid[0, 0, :, 2], torch.tensor([0.5, 2.5, 4.5, 6.5]))  # z: 8 -> 4


def test_2d_resize_is_bicubic():
    mae = _mae(2, (16, 32))  # grid 4 x 8
    net = ViTClassifier(1, 14, (32, 16), spatial_dims=2, **ENC)  # grid 8 x 4: 32 tokens, as the source
    report = load_pretrained_encoder(net, mae.state_dict())
    assert report.interpolated == ["pos_embed (4, 8)->(8, 4)"]
    src = mae.encoder.pos_embed.detach()
    torch.testing.assert_close(net.encoder.pos_embed.detach(), _known_grid(src, (4, 8), (8, 4), "bicubic"))
    assert not torch.allclose(net.encoder.pos_embed.detach(), _known_grid(src, (4, 8), (8, 4), "bilinear"))
    # by hand: one token set to 1 on a 1 x 4 grid, upsampled to 1 x 8; the values are the weights of the cubic
    # convolution kernel (a = -0.75) at the distances from target j's source coordinate j / 2 - 0.25 to token 1:
    # j = 0: 1.25 -> -0.10546875, j = 1: 0.75 -> 0.26171875, j = 2 and 3: 0.25 -> 0.87890625
    delta = torch.zeros(1, 4, 1)
    delta[0, 1] = 1.0
    up = interpolate_pos_embed(delta, (1, 4), (1, 8))[0, :, 0]
    torch.testing.assert_close(up[:4], torch.tensor([-0.10546875, 0.26171875, 0.87890625, 0.87890625]))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_equal_grids_are_untouched(spatial_dims):
    pe = torch.randn(1, 2**spatial_dims * 3, 6)
    grid = (2,) * (spatial_dims - 1) + (3,)
    assert interpolate_pos_embed(pe, grid, grid) is pe
    img = (16,) * (spatial_dims - 1) + (24,)  # a non-cubic grid, recorded
    mae = _mae(spatial_dims, img)
    net = UNETR(1, 3, img, spatial_dims=spatial_dims, feature_size=6, **ENC)
    report = load_pretrained_encoder(net, mae.state_dict())
    assert report.interpolated == [] and report.src_grid == tuple(net.encoder.grid_size)
    assert torch.equal(net.encoder.pos_embed, mae.encoder.pos_embed)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_checkpoint_without_record_is_refused(spatial_dims, tmp_path):
    """A position embedding's token count does not tell its grid (128 tokens: 4 x 4 x 8, 4 x 8 x 4, 8 x 4 x 4, ...):
    a checkpoint that does not record its pre-training geometry was not written by this project and is refused."""
    mae = _mae(spatial_dims, (16,) * spatial_dims)  # even a square / cubic grid
    path = tmp_path / "foreign_mae.pt"
    torch.save(_legacy(mae.state_dict()), path)
    net = UNETR(1, 3, (16,) * spatial_dims, spatial_dims=spatial_dims, feature_size=6, **ENC)
    before = net.encoder.pos_embed.detach().clone()
    with pytest.raises(ValueError, match=r"foreign_mae.pt does not record its pre-training geometry.*Pre-train again"):
        load_pretrained_encoder(net, path)
    assert torch.equal(net.encoder.pos_embed, before)  # nothing loaded


def test_classifier_global_pool_drops_the_final_norm():
    """MAE's global-pool head has no final norm: the MAE's norm weights are reported as not used, not unexpected."""
    mae = _mae(2, (16, 16))
    net = ViTClassifier(1, 14, (16, 16), spatial_dims=2, **ENC)
    report = load_pretrained_encoder(net, mae.state_dict())
    assert report.not_used == ["norm.bias", "norm.weight"] and report.unexpected == []
    assert sorted(report.loaded) == sorted(net.encoder.state_dict())
    assert "final norm ['norm.bias', 'norm.weight'] not used (global-pool head)" in report.summary()
    cls_net = ViTClassifier(1, 14, (16, 16), pool="cls", spatial_dims=2, **ENC)
    report = load_pretrained_encoder(cls_net, mae.state_dict())
    assert "norm.weight" in report.loaded and report.not_used == []
    assert torch.equal(cls_net.encoder.norm.weight, mae.encoder.norm.weight)


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


def _networks(spatial_dims):
    img = (16,) * spatial_dims
    return {
        "UNETR": UNETR(1, 3, img, spatial_dims=spatial_dims, feature_size=4, **ENC),
        "ViTClassifier": ViTClassifier(1, 3, img, spatial_dims=spatial_dims, **ENC),
        "MaskedAutoencoderViT": _mae(spatial_dims, img),
    }


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_networks_refuse_non_finite_weights_from_any_loader(spatial_dims, bad, tmp_path):
    """A bundle's network refuses a state dict with NaN/inf before copying any of it, whoever loads it; a loader
    that knows the file (ignite's ``load_objects`` given a path, as ``monai.bundle ckpt_export`` / ``onnx_export``
    call it, and MONAI's ``CheckpointLoader``) gets it named."""
    from ignite.engine import Engine
    from ignite.handlers import Checkpoint
    from monai.handlers import CheckpointLoader

    for name, net in _networks(spatial_dims).items():
        before = {k: v.clone() for k, v in net.state_dict().items()}
        state = net.state_dict()
        key = next(k for k in state if k.startswith("encoder.blocks.1.") and state[k].is_floating_point())
        state[key] = torch.full_like(state[key], bad)
        path = tmp_path / f"{name}.pt"
        torch.save(state, path)
        tail = rf"tensor '{key}' holds non-finite values .*refusing to load it into {name}"
        with pytest.raises(NonFiniteError, match=rf"^the state dict loaded into {name}: {tail}"):
            net.load_state_dict(state)
        with pytest.raises(NonFiniteError, match=rf"^checkpoint '{path}': {tail}"):
            Checkpoint.load_objects(to_load={"": net}, checkpoint=str(path))
        loader = CheckpointLoader(load_path=str(path), load_dict={"model": net}, map_location="cpu")
        with pytest.raises(NonFiniteError, match=rf"^checkpoint '{path}': {tail}"):
            loader(Engine(lambda e, b: None))
        wrapped = torch.nn.Sequential(net)  # nested: the keys under the network's prefix
        with pytest.raises(NonFiniteError, match=rf"tensor '0\.{key}'"):
            wrapped.load_state_dict({f"0.{k}": v for k, v in state.items()})
        assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items()), name  # nothing copied
        finite = {k: v + 1 if v.is_floating_point() else v for k, v in before.items()}
        net.load_state_dict(finite)  # finite weights load as before
        assert all(torch.equal(net.state_dict()[k], v) for k, v in finite.items()), name
