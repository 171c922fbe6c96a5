from __future__ import annotations

import json
import os
from types import SimpleNamespace
from unittest.mock import MagicMock

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.engines import Evaluator

from shared_networks.handlers import (
    AtomicCheckpointSaver,
    HausdorffDistanceMM,
    MetricsReport,
    PretrainedEncoderLoader,
    ReconstructionSaver,
    ValidationEveryAndLast,
    prepare_image_as_target,
)
from shared_networks.mae import MaskedAutoencoderViT, MaskedPatchLoss
from shared_networks.unetr import UNETR

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
    mae = MaskedAutoencoderViT(1, (8, 8), spatial_dims=2, decoder_hidden_size=8, decoder_num_layers=1,
                               decoder_num_heads=2, **ENC)  # fmt: skip
    img = torch.rand(2, 1, 8, 8)
    engine = Engine(lambda e, b: {"image": img, "pred": mae(img)})
    ReconstructionSaver(tmp_path, (4, 4), interval=2).attach(engine)
    engine.run([0], max_epochs=3)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["reconstruction_epoch2.png", "reconstruction_epoch3.png"]


def test_hausdorff_in_millimetres():
    """A one-voxel shift along an axis of 2.5 mm spacing is an HD95 of 2.5 mm."""
    gt = torch.zeros(1, 2, 10, 10, 10)
    gt[0, 1, 3:6, 3:6, 3:6] = 1
    gt[0, 0] = 1 - gt[0, 1]
    pred = torch.roll(gt, shifts=1, dims=4)
    affine = torch.diag(torch.tensor([1.0, 1.0, 2.5, 1.0]))
    label = [MetaTensor(gt[0], affine=affine)]
    handler = HausdorffDistanceMM(include_background=False, percentile=95, save_details=False)
    handler.reset()
    handler.update(([pred[0]], label))
    assert float(handler.compute()) == pytest.approx(2.5)


def test_metrics_report_files(tmp_path):
    report = MetricsReport(tmp_path, ["spleen", "left kidney"], ["dice", "hd95"])
    engine = SimpleNamespace(
        state=SimpleNamespace(
            metric_details={
                "dice": torch.tensor([[0.5, float("nan")], [1.0, 0.25]]),
                "hd95": torch.tensor([[2.0, float("nan")], [4.0, 8.0]]),
            }
        ),
        logger=SimpleNamespace(info=lambda *a: None),
    )
    report.cases = ["a.nii.gz", "b.nii.gz"]
    report(engine)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_cases"] == 2
    assert summary["dice"]["per_class"]["spleen"] == {"mean": 0.75, "n": 2}
    assert summary["dice"]["per_class"]["left kidney"] == {"mean": 0.25, "n": 1}  # NaN (absent organ) left out
    assert summary["dice"]["mean"] == pytest.approx(0.5)
    assert summary["hd95"]["mean"] == pytest.approx((3.0 + 8.0) / 2)
    rows = (tmp_path / "per_case.csv").read_text().splitlines()
    assert rows[0] == "case,dice_spleen,dice_left_kidney,hd95_spleen,hd95_left_kidney"
    assert rows[1] == "a.nii.gz,0.5,nan,2,nan"


def test_atomic_checkpoint_saver(tmp_path):
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_final=True,
                          final_filename="model.pt").attach(engine)  # fmt: skip
    engine.run([0], max_epochs=1)
    path = tmp_path / "model.pt"
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["weight"], net.weight)


def test_pretrained_encoder_loader(tmp_path, caplog):
    mae = MaskedAutoencoderViT(1, (16, 16), spatial_dims=2, decoder_hidden_size=8, decoder_num_layers=1,
                               decoder_num_heads=2, **ENC)  # fmt: skip
    torch.save(mae.state_dict(), tmp_path / "mae.pt")
    net = UNETR(1, 3, (16, 16), spatial_dims=2, feature_size=4, **ENC)
    engine = Engine(lambda e, b: None)
    loader = PretrainedEncoderLoader(net, tmp_path / "mae.pt")
    loader.attach(engine)
    engine.run([0], max_epochs=1)
    assert len(loader.report.loaded) == len(net.encoder.state_dict())
    assert torch.equal(net.encoder.blocks[0].attn.qkv.weight, mae.encoder.blocks[0].attn.qkv.weight)
    for value in (None, "", "none", "None"):  # a command line can only say "none"
        scratch = PretrainedEncoderLoader(net, value)
        scratch()
        assert scratch.report is False
    with pytest.raises(FileNotFoundError, match="typo.pt"):
        PretrainedEncoderLoader(net, tmp_path / "typo.pt")()


@pytest.mark.parametrize("max_epochs,expected", [(5, [2, 4, 5]), (4, [2, 4]), (1, [1])])
def test_validation_every_and_last(max_epochs, expected):
    validator = MagicMock(spec=Evaluator)
    engine = Engine(lambda e, b: None)
    ValidationEveryAndLast(interval=2, validator=validator).attach(engine)
    engine.run([0], max_epochs=max_epochs)
    assert [c.args[0] for c in validator.run.call_args_list] == expected
