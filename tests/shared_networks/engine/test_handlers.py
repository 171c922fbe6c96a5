from __future__ import annotations

from unittest.mock import MagicMock

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import Evaluator

from shared_networks.engine.handlers import (
    EncoderFreeze,
    PretrainedEncoderLoader,
    ReconstructionSaver,
    ValidationEveryAndLast,
    prepare_image_as_target,
)
from shared_networks.networks.mae import MaskedAutoencoderViT, MaskedPatchLoss
from shared_networks.networks.unetr import UNETR

ENC = dict(patch_size=4, hidden_size=48, num_layers=4, num_heads=4, mlp_dim=96)


def test_prepare_image_as_target():
    img = torch.randn(2, 1, 4, 4)
    x, y = prepare_image_as_target({"image": img, "label": torch.zeros(1)}, device="cpu")
    assert x is not None and torch.equal(x, img) and torch.equal(y, img)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reconstruction_of_a_perfect_prediction_is_the_input(spatial_dims, tmp_path):
    torch.manual_seed(0)
    img = torch.rand(1, 1, *(8,) * spatial_dims)
    loss = MaskedPatchLoss(4, spatial_dims)
    pred = loss.target(img)  # what a perfect MAE predicts (normalised patches)
    half = 2 ** (spatial_dims - 1)
    mask = torch.tensor([[1.0] * half + [0.0] * half])  # the first row of patches (h = 0) hidden
    saver = ReconstructionSaver(tmp_path, (4,) * spatial_dims)
    inp, masked, recon = saver.panels(img, pred, mask)
    np.testing.assert_allclose(recon, inp, atol=1e-4)
    assert (masked == 0).sum() > 0 and not np.allclose(masked, inp)
    path = saver.save_png([inp, masked, recon], tmp_path / "r.png")
    from PIL import Image

    assert Image.open(path).width >= 384 and not list(tmp_path.glob(".*tmp"))


def test_reconstruction_saver_on_a_trainer(tmp_path):
    mae = MaskedAutoencoderViT(
        1, (8, 8), spatial_dims=2, decoder_hidden_size=8, decoder_num_layers=1, decoder_num_heads=2, **ENC
    )
    img = torch.rand(2, 1, 8, 8)
    engine = Engine(lambda e, b: {"image": img, "pred": mae(img)})
    ReconstructionSaver(tmp_path, (4, 4), interval=2).attach(engine)
    engine.run([0], max_epochs=3)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["reconstruction_epoch2.png", "reconstruction_epoch3.png"]


def test_pretrained_encoder_loader(tmp_path, caplog):
    mae = MaskedAutoencoderViT(
        1, (16, 16), spatial_dims=2, decoder_hidden_size=8, decoder_num_layers=1, decoder_num_heads=2, **ENC
    )
    torch.save(mae.state_dict(), tmp_path / "mae.pt")
    net = UNETR(1, 3, (16, 16), spatial_dims=2, feature_size=4, **ENC)
    engine = Engine(lambda e, b: None)
    loader = PretrainedEncoderLoader(net, tmp_path / "mae.pt")
    loader.attach(engine)  # loads now, before the engine starts
    assert len(loader.report.loaded) == len(net.encoder.state_dict())
    assert torch.equal(net.encoder.blocks[0].attn.qkv.weight, mae.encoder.blocks[0].attn.qkv.weight)
    engine.run([0], max_epochs=1)
    assert torch.equal(net.encoder.blocks[0].attn.qkv.weight, mae.encoder.blocks[0].attn.qkv.weight)
    for value in (None, "", "none", "None"):  # a command line can only say "none"
        scratch = PretrainedEncoderLoader(net, value)
        scratch()
        assert scratch.report is False
    with pytest.raises(FileNotFoundError, match="typo.pt"):
        PretrainedEncoderLoader(net, tmp_path / "typo.pt")()
    typo = Engine(lambda e, b: None)
    PretrainedEncoderLoader(net, tmp_path / "typo.pt").attach(typo)  # a workflow can still be built (and checked)
    with pytest.raises(FileNotFoundError, match="typo.pt"):
        typo.run([0], max_epochs=1)  # the run stops as it starts


@pytest.mark.parametrize("max_epochs,expected", [(5, [2, 4, 5]), (4, [2, 4]), (1, [1])])
def test_validation_every_and_last(max_epochs, expected):
    validator = MagicMock(spec=Evaluator)
    engine = Engine(lambda e, b: None)
    ValidationEveryAndLast(interval=2, validator=validator).attach(engine)
    engine.run([0], max_epochs=max_epochs)
    assert [c.args[0] for c in validator.run.call_args_list] == expected


def test_a_checkpoint_loaded_when_the_engine_starts_wins_over_the_mae_encoder(tmp_path):
    """MONAI Label continues training from models/model.pt with a CheckpointLoader (Events.STARTED) put first in the
    handler list: the fine-tuned weights must not be overwritten by the MAE encoder, whatever the order."""
    from monai.handlers import CheckpointLoader

    mae = MaskedAutoencoderViT(
        1, (16, 16), spatial_dims=2, decoder_hidden_size=8, decoder_num_layers=1, decoder_num_heads=2, **ENC
    )
    torch.save(mae.state_dict(), tmp_path / "mae.pt")
    torch.manual_seed(1)
    tuned = UNETR(1, 3, (16, 16), spatial_dims=2, feature_size=4, **ENC)
    torch.save(tuned.state_dict(), tmp_path / "model.pt")
    for order in ("checkpoint first", "encoder first"):
        torch.manual_seed(2)
        net = UNETR(1, 3, (16, 16), spatial_dims=2, feature_size=4, **ENC)
        handlers = [
            CheckpointLoader(load_path=str(tmp_path / "model.pt"), load_dict={"model": net}, strict=True),
            PretrainedEncoderLoader(net, tmp_path / "mae.pt"),
        ]
        engine = Engine(lambda e, b: None)
        for h in handlers if order == "checkpoint first" else handlers[::-1]:
            h.attach(engine)
        engine.run([0], max_epochs=1)
        for key, value in tuned.state_dict().items():
            assert torch.equal(net.state_dict()[key], value), (order, key)


def test_pretrained_encoder_loader_reads_the_recorded_grid(tmp_path):
    """A non-square pre-training size (16 x 32, grid 4 x 8) fine-tuned at 32 x 16 (8 x 4, the same 32 tokens): the
    record in mae.pt decides the layout; without it the file is refused."""
    mae = MaskedAutoencoderViT(
        1, (16, 32), spatial_dims=2, decoder_hidden_size=8, decoder_num_layers=1, decoder_num_heads=2, **ENC
    )
    torch.save(mae.state_dict(), tmp_path / "mae.pt")
    net = UNETR(1, 3, (32, 16), spatial_dims=2, feature_size=4, **ENC)
    loader = PretrainedEncoderLoader(net, tmp_path / "mae.pt")
    loader()
    assert (loader.report.src_grid, loader.report.interpolated) == ((4, 8), ["pos_embed (4, 8)->(8, 4)"])
    recorded = net.encoder.pos_embed.detach().clone()
    legacy = {k: v for k, v in mae.state_dict().items() if not k.startswith("geometry.")}
    torch.save(legacy, tmp_path / "legacy.pt")
    with pytest.raises(ValueError, match="legacy.pt does not record its pre-training geometry"):
        PretrainedEncoderLoader(net, tmp_path / "legacy.pt")()
    assert torch.equal(net.encoder.pos_embed, recorded)  # nothing loaded from the refused file


def _lpft_run(epochs_frozen: int, max_epochs: int = 3, probe: bool = False):
    """Trains a tiny ViTClassifier on random data; returns the encoder and head weights after each epoch."""
    from shared_networks.networks.classifier import ViTClassifier

    torch.manual_seed(0)
    net = ViTClassifier(1, 2, img_size=(8, 8), spatial_dims=2, **ENC)
    if probe:
        net.encoder.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.05)
    x, y = torch.randn(4, 1, 8, 8), torch.rand(4, 2)

    def step(engine, _):
        opt.zero_grad(set_to_none=False)  # as SupervisedTrainer (optim_set_to_none False)
        torch.nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
        opt.step()

    engine = Engine(step)
    EncoderFreeze(net, epochs_frozen).attach(engine)
    snaps = []
    engine.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda e: snaps.append((net.encoder.patch_embed.proj.weight.clone(), net.head.weight.clone())),
    )
    engine.run([0], max_epochs=max_epochs)
    return net, snaps


def test_encoder_freeze_trains_the_head_first_then_everything():
    from shared_networks.networks.classifier import ViTClassifier

    net, snaps = _lpft_run(epochs_frozen=2, max_epochs=3)
    torch.manual_seed(0)
    start = ViTClassifier(1, 2, img_size=(8, 8), spatial_dims=2, **ENC).encoder.patch_embed.proj.weight
    # epochs 1-2: the encoder does not move (no gradient, so neither Adam nor weight decay touch it), the head does
    assert torch.equal(snaps[0][0], start) and torch.equal(snaps[1][0], start)
    assert not torch.equal(snaps[0][1], snaps[1][1])
    # epoch 3: the encoder trains
    assert not torch.equal(snaps[2][0], start)
    assert all(p.requires_grad for p in net.parameters())


def test_encoder_freeze_leaves_a_probe_frozen_and_is_off_at_zero():
    net, snaps = _lpft_run(epochs_frozen=1, max_epochs=2, probe=True)
    assert torch.equal(snaps[0][0], snaps[1][0]) and not any(p.requires_grad for p in net.encoder.parameters())
    _, snaps = _lpft_run(epochs_frozen=0, max_epochs=1)
    torch.manual_seed(0)
    from shared_networks.networks.classifier import ViTClassifier

    start = ViTClassifier(1, 2, img_size=(8, 8), spatial_dims=2, **ENC).encoder.patch_embed.proj.weight
    assert not torch.equal(snaps[0][0], start)
    with pytest.raises(ValueError, match="freeze_encoder_epochs"):
        EncoderFreeze(torch.nn.Linear(1, 1), -1)
    with pytest.raises(ValueError, match="no 'encoder'"):
        EncoderFreeze(torch.nn.Linear(1, 1), 2).attach(Engine(lambda e, b: None))
