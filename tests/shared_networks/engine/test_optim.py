from __future__ import annotations

import pytest
import torch
from monai.optimizers import WarmupCosineSchedule

from shared_networks.engine.optim import param_groups_lrd
from shared_networks.networks.classifier import ViTClassifier
from shared_networks.networks.unetr import UNETR

ENC = dict(patch_size=4, hidden_size=48, num_layers=3, num_heads=4, mlp_dim=96)


def _groups(**kw):
    net = UNETR(1, 3, (16, 16), spatial_dims=2, feature_size=4, **ENC)
    return net, param_groups_lrd(net, lr=1.0, **kw)


def test_layer_decay_and_no_weight_decay():
    net, groups = _groups(weight_decay=0.05, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["names"]}
    assert set(by_name) == {n for n, _ in net.named_parameters()}
    # 3 blocks: embedding depth 0 -> 0.5**4, block i -> 0.5**(3 - i), decoder -> 1
    assert by_name["encoder.patch_embed.proj.weight"]["lr"] == pytest.approx(0.5**4)
    assert by_name["encoder.blocks.0.attn.qkv.weight"]["lr"] == pytest.approx(0.5**3)
    assert by_name["encoder.blocks.2.mlp.0.weight"]["lr"] == pytest.approx(0.5)
    assert by_name["encoder.norm.weight"]["lr"] == pytest.approx(1.0)
    assert by_name["out.conv.conv.weight"]["lr"] == pytest.approx(1.0)
    for n in ("encoder.pos_embed", "encoder.blocks.1.attn.qkv.bias", "encoder.blocks.1.norm1.weight"):
        assert by_name[n]["weight_decay"] == 0.0, n
    assert by_name["encoder.blocks.1.attn.qkv.weight"]["weight_decay"] == 0.05


def test_warmup_cosine_keeps_group_ratios():
    net, groups = _groups(layer_decay=0.75)
    opt = torch.optim.AdamW(groups)
    sched = WarmupCosineSchedule(opt, warmup_steps=2, t_total=10)
    ratios0 = [g["lr_scale"] for g in opt.param_groups]
    lrs = []
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[-1]["lr"])
        head = opt.param_groups[-1]["lr"]
        if head > 0:
            assert [g["lr"] / head for g in opt.param_groups] == pytest.approx(ratios0)
    assert max(lrs) == pytest.approx(1.0, rel=0.05) and lrs[-1] < 0.05


def test_bad_layer_decay():
    with pytest.raises(ValueError, match="layer_decay"):
        _groups(layer_decay=0.0)


def test_fused_adamw_takes_the_groups_and_matches_the_for_loop():
    """The groups work with torch's fused AdamW (the faster opt-in) and give the for-loop implementation's update."""
    torch.manual_seed(0)
    # no qkv bias: the key bias has an exactly-zero gradient in theory, and AdamW turns its rounding noise into full
    # steps of either sign, different between any two implementations
    nets = [
        ViTClassifier(
            1,
            3,
            (8, 8),
            patch_size=4,
            hidden_size=24,
            num_layers=2,
            num_heads=2,
            mlp_dim=48,
            qkv_bias=False,
            spatial_dims=2,
        )
        for _ in range(2)
    ]
    nets[1].load_state_dict(nets[0].state_dict())
    x = torch.randn(2, 1, 8, 8)
    opts = [
        torch.optim.AdamW(param_groups_lrd(net, lr=1e-2, layer_decay=0.75), lr=1e-2, **kw)
        for net, kw in zip(nets, ({"foreach": False}, {"fused": True}), strict=True)
    ]
    for _ in range(3):
        for net, opt in zip(nets, opts, strict=True):
            net(x).square().sum().backward()
            opt.step()
            opt.zero_grad()
    for (name, a), b in zip(nets[0].named_parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
