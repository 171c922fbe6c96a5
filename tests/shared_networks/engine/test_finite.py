"""Non-finite values: first_non_finite/check_finite, StopOnNonFinite on a SupervisedTrainer (loss, gradients,
weights; the message names epoch, iteration and files), the savers, the resume loader, FiniteCheckpointLoader and
the MAE hand-off (the message names the file and the tensor)."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from torch import nn

from shared_networks import (
    AtomicCheckpointSaver,
    FiniteCheckpointLoader,
    MaskedAutoencoderViT,
    NonFiniteError,
    ResumableCheckpointSaver,
    StopOnNonFinite,
    ViTClassifier,
    first_non_finite,
    load_pretrained_encoder,
)
from shared_networks.engine.finite import batch_files
from shared_networks.networks.handoff import check_finite

BAD = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


@pytest.mark.parametrize("bad", BAD)
def test_first_non_finite_names_the_first_bad_tensor(bad):
    state = {"a": torch.ones(3), "b": {"c": torch.zeros(2), "d": torch.tensor([1.0, BAD[bad]])}, "n": torch.arange(3)}
    assert first_non_finite(state) == "b.d"
    assert first_non_finite({"a": torch.ones(2), "steps": torch.tensor([5]), "lr": 0.1}) is None
    net = nn.Linear(2, 2)
    assert first_non_finite(net) is None
    with torch.no_grad():
        net.bias[1] = BAD[bad]
    assert first_non_finite(net) == "bias"
    with pytest.raises(NonFiniteError, match=r"model\.pt: tensor 'bias' holds non-finite values") as err:
        check_finite(net.state_dict(), "model.pt")
    assert isinstance(err.value, RuntimeError) and isinstance(err.value, FloatingPointError)
    assert ("1 NaN" if bad == "nan" else "1 inf") in str(err.value)


def test_batch_files_from_meta_tensors_and_meta_dicts():
    image = MetaTensor(torch.zeros(3, 1, 2), meta={"filename_or_obj": ["/d/a.nii.gz", "/d/a.nii.gz", "/d/b.nii.gz"]})
    assert batch_files({"image": image, "label": torch.zeros(1)}) == ["/d/a.nii.gz", "/d/b.nii.gz"]
    assert batch_files({"image": torch.zeros(1), "image_meta_dict": {"filename_or_obj": "/d/c.png"}}) == ["/d/c.png"]
    assert batch_files([{"image": MetaTensor(torch.zeros(1), meta={"filename_or_obj": "x"})}]) == ["x"]
    assert batch_files({"image": torch.zeros(1)}) == []


def _data(values, names):
    """One item per value: a (1, 4) image filled with it, its file name in the MetaTensor's metadata."""
    return [
        {"image": MetaTensor(torch.full((1, 4), v), meta={"filename_or_obj": n}), "label": torch.zeros(1, 1)}
        for v, n in zip(values, names, strict=True)
    ]


def _trainer(data, handlers, net=None, max_epochs=2, loss=None):
    torch.manual_seed(0)
    net = net or nn.Linear(4, 1)
    return SupervisedTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=DataLoader(data, batch_size=2, shuffle=False),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=loss or nn.MSELoss(),
        train_handlers=handlers,
    ), net


@pytest.mark.parametrize("bad", BAD)
def test_a_non_finite_loss_stops_training_naming_epoch_iteration_and_files(bad):
    data = _data([1.0, 2.0, 3.0, BAD[bad]], ["/d/ok1.nii.gz", "/d/ok2.nii.gz", "/d/ok3.nii.gz", "/d/slab.nii.gz"])
    trainer, net = _trainer(data, [StopOnNonFinite()])
    steps = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: steps.append(net.weight.detach().clone()))
    with pytest.raises(NonFiniteError) as err:
        trainer.run()
    msg = str(err.value)
    assert "non-finite training loss" in msg
    assert "epoch 1, iteration 2 (2 of 2 in the epoch)" in msg
    assert "/d/ok3.nii.gz, /d/slab.nii.gz" in msg and "ok1" not in msg
    # stopped before the backward pass: the weights are those after the one good iteration
    assert len(steps) == 1 and torch.equal(net.weight, steps[0]) and first_non_finite(net) is None


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_a_non_finite_gradient_stops_before_the_optimiser_step(bad):
    data = _data([1.0, 2.0], ["/d/a.nii.gz", "/d/b.nii.gz"])
    net = nn.Linear(4, 1)
    net.bias.register_hook(lambda g: g * BAD[bad])
    trainer, net = _trainer(data, [StopOnNonFinite()], net=net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(NonFiniteError, match=r"non-finite gradient of 'bias' .*epoch 1, iteration 1.*/d/a\.nii\.gz"):
        trainer.run()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_non_finite_weights_stop_at_the_end_of_the_epoch():
    data = _data([1.0, 2.0], ["/d/a.nii.gz", "/d/b.nii.gz"])
    trainer, net = _trainer(data, [StopOnNonFinite(check_grads=False)])
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: net.weight.data.fill_(math.inf))
    with pytest.raises(NonFiniteError, match=r"non-finite weights in 'weight' .*after epoch 1"):
        trainer.run()


def test_other_errors_still_propagate_when_it_is_the_only_exception_handler():
    engine = Engine(lambda e, b: 1 / 0)
    StopOnNonFinite().attach(engine)
    with pytest.raises(ZeroDivisionError):
        engine.run([0], max_epochs=1)


def test_a_stopped_run_writes_no_final_checkpoint_and_savers_refuse_non_finite_weights(tmp_path):
    data = _data([1.0, math.nan], ["/d/a.nii.gz", "/d/slab.nii.gz"])
    net = nn.Linear(4, 1)
    final = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"mae": net}, save_final=True, final_filename="mae.pt"
    )
    # the saver first: its "save on exception" would run before any other EXCEPTION_RAISED handler
    for handlers in ([final, StopOnNonFinite()], [StopOnNonFinite(), final]):
        trainer, _ = _trainer(data, handlers, net=net)
        with pytest.raises(NonFiniteError):
            trainer.run()
        assert not (tmp_path / "mae.pt").exists()

    # without the stop handler, the final save itself refuses, naming the file and the tensor
    trainer, _ = _trainer(_data([1.0, 2.0], ["/d/a", "/d/b"]), [final], net=net)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: net.bias.data.fill_(math.nan))
    with pytest.raises(NonFiniteError, match=rf"refusing to write '{tmp_path / 'mae.pt'}': tensor '(weight|bias)'"):
        trainer.run()
    assert not (tmp_path / "mae.pt").exists()


def test_the_best_model_saver_refuses_non_finite_weights_and_keeps_the_previous_file(tmp_path):
    net = nn.Linear(1, 1)
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path),
        save_dict={"model": net},
        save_key_metric=True,
        key_metric_name="dice",
        key_metric_filename="model.pt",
    )
    scores = iter([0.5, 0.9])
    evaluator = Engine(lambda e, b: None)
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(dice=next(scores)))
    saver.attach(evaluator)
    evaluator.run([0], max_epochs=1)
    good = torch.load(tmp_path / "model.pt", weights_only=True)
    net.weight.data.fill_(math.nan)
    with pytest.raises(NonFiniteError, match=r"model\.pt': tensor 'weight'"):
        evaluator.run([0], max_epochs=1)
    kept = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(good[k], kept[k]) for k in good)


def test_resume_refuses_a_checkpoint_with_non_finite_values(tmp_path):
    net = nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    engine = Engine(lambda e, b: None)
    engine.state.epoch, engine.state.iteration = 1, 1
    bad = {
        "network": {**net.state_dict(), "weight": torch.full((1, 2), math.nan)},
        "optimizer": opt.state_dict(),
        "trainer": {"epoch": 1, "iteration": 1, "epoch_length": 1, "max_epochs": 3},
    }
    torch.save(bad, tmp_path / "train_checkpoint_epoch=1.pt")
    saver = ResumableCheckpointSaver(tmp_path, {"network": net, "optimizer": opt}, resume=True)
    saver.attach(engine)
    with pytest.raises(NonFiniteError, match=r"train_checkpoint_epoch=1\.pt' to resume from: tensor 'network\.weight'"):
        engine.run([0], max_epochs=3)


def test_the_evaluation_loader_refuses_non_finite_weights_before_any_image(tmp_path):
    net = nn.Linear(4, 1)
    torch.save(net.state_dict(), tmp_path / "good.pt")
    torch.save({**net.state_dict(), "bias": torch.tensor([math.inf])}, tmp_path / "model.pt")
    data = _data([1.0], ["/d/a.nii.gz"])
    seen = []
    for name in ("good.pt", "model.pt"):
        evaluator = SupervisedEvaluator(
            device="cpu",
            val_data_loader=DataLoader(data, batch_size=1),
            network=net,
            val_handlers=[
                FiniteCheckpointLoader(load_path=str(tmp_path / name), load_dict={"model": net}, map_location="cpu")
            ],
        )
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e, n=name: seen.append(n))
        if name == "good.pt":
            evaluator.run()
        else:
            with pytest.raises(NonFiniteError, match=rf"checkpoint '{tmp_path / 'model.pt'}': tensor 'bias'"):
                evaluator.run()
    assert seen == ["good.pt"]


def test_the_evaluation_loader_passes_on_the_refusal_of_a_bundle_network(tmp_path):
    """A bundle's network refuses NaN weights itself when they are loaded; the loader passes that error on as it is
    (the file and the tensor named, not wrapped in "cannot be loaded")."""
    net = ViTClassifier(1, 3, (16, 16), spatial_dims=2, **ENC)
    state = net.state_dict()
    state["head.bias"] = torch.full_like(state["head.bias"], math.nan)
    torch.save(state, tmp_path / "model.pt")
    evaluator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=DataLoader(_data([1.0], ["/d/a.nii.gz"]), batch_size=1),
        network=net,
        val_handlers=[
            FiniteCheckpointLoader(load_path=str(tmp_path / "model.pt"), load_dict={"model": net}, map_location="cpu")
        ],
    )
    with pytest.raises(NonFiniteError, match=rf"^checkpoint '{tmp_path / 'model.pt'}': tensor 'head\.bias' holds"):
        evaluator.run()
    assert bool(torch.isfinite(net.head.bias).all())


@pytest.mark.parametrize("content", [None, b"not a checkpoint", b"PK\x03\x04truncated zip"])
def test_the_evaluation_loader_names_a_missing_or_unreadable_checkpoint(tmp_path, content):
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    net = nn.Linear(4, 1)
    evaluator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=DataLoader(_data([1.0], ["/d/a.nii.gz"]), batch_size=1),
        network=net,
        val_handlers=[FiniteCheckpointLoader(load_path=str(path), load_dict={"model": net}, map_location="cpu")],
    )
    with pytest.raises(Exception, match=rf"checkpoint '{path}'") as info:
        evaluator.run()
    assert isinstance(info.value, FileNotFoundError) == (content is None)


ENC = dict(patch_size=(4, 4), hidden_size=12, num_layers=1, num_heads=2, mlp_dim=24)


@pytest.mark.parametrize("bad", BAD)
def test_the_mae_hand_off_refuses_a_checkpoint_with_non_finite_values(tmp_path, bad):
    mae = MaskedAutoencoderViT(
        1, (16, 16), spatial_dims=2, decoder_hidden_size=8, decoder_num_layers=1, decoder_num_heads=2, **ENC
    )
    state = mae.state_dict()
    key = next(k for k in state if k.startswith("encoder.blocks.0"))
    state[key] = state[key].clone().fill_(BAD[bad])
    torch.save(state, tmp_path / "mae.pt")
    clf = ViTClassifier(1, 3, (16, 16), spatial_dims=2, **ENC)
    with pytest.raises(NonFiniteError, match=rf"{tmp_path / 'mae.pt'}: tensor '{key}' holds non-finite"):
        load_pretrained_encoder(clf, tmp_path / "mae.pt")
