from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
from monai.handlers import (
    CheckpointLoader,
    CheckpointSaver,
    LrScheduleHandler,
    StatsHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
)

from shared_networks.engine.distributed import (
    DistributedTrainer,
    destroy_process_group,
    init_process_group,
    is_not_rank0,
    local_device,
    rank0_only,
    scale_lr,
    set_rank_determinism,
)
from shared_networks.engine.handlers import PretrainedEncoderLoader, ReconstructionSaver

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def single_process_group(monkeypatch):
    """A real gloo process group of one process, joined through the torchrun environment variables."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    init_process_group()
    yield
    destroy_process_group()


def _optimizer() -> torch.optim.Optimizer:
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    return torch.optim.AdamW([{"params": a.parameters(), "lr": 1e-3}, {"params": b.parameters(), "lr": 4e-3}], lr=4e-3)


def test_local_device(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert local_device() == torch.device("cuda:3")


def test_rank_tests_outside_a_group_and_on_rank0(single_process_group):
    assert is_not_rank0() is False  # rank 0 of a joined group
    set_rank_determinism(5)  # seed 5 + rank 0
    first = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(first, torch.rand(3))


def test_rank_tests_on_other_ranks(monkeypatch):
    assert not dist.is_initialized() and is_not_rank0() is False  # no group: a one-process run writes
    with pytest.raises(ValueError):
        set_rank_determinism(0)  # needs the group torchrun describes
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 2)
    seeds = []
    monkeypatch.setattr("shared_networks.engine.distributed.set_determinism", lambda seed: seeds.append(seed))
    assert is_not_rank0() is True
    set_rank_determinism(7)
    assert seeds == [9]


def test_init_process_group_needs_the_torchrun_environment(monkeypatch):
    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing"):
        init_process_group()
    assert not dist.is_initialized()


def test_init_and_destroy_process_group(single_process_group):
    assert dist.is_initialized() and dist.get_backend() == "gloo" and dist.get_world_size() == 1
    init_process_group()  # already joined: nothing happens
    assert dist.get_world_size() == 1
    destroy_process_group()
    assert not dist.is_initialized()
    destroy_process_group()  # not joined: nothing happens


def test_scale_lr_keeps_the_ratios_and_runs_once():
    opt = _optimizer()
    assert scale_lr(opt, 4) is opt
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([4e-3, 1.6e-2])
    with pytest.raises(RuntimeError, match="once"):
        scale_lr(opt, 4)
    opt = _optimizer()
    torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)  # holds the rates as initial_lr
    with pytest.raises(RuntimeError, match="before the lr scheduler"):
        scale_lr(opt, 2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 4e-3])


def test_rank0_only_keeps_the_writers_on_rank_0(tmp_path):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    tb_dir = tmp_path / "tb"
    everywhere = [
        LrScheduleHandler(torch.optim.lr_scheduler.StepLR(opt, 1)),
        ValidationHandler(interval=1),
        PretrainedEncoderLoader(net, None),
        CheckpointLoader(load_path=str(tmp_path / "last.pt"), load_dict={"net": net}),
    ]
    writers = [
        StatsHandler(),
        TensorBoardStatsHandler(log_dir=str(tb_dir)),
        CheckpointSaver(save_dir=str(tmp_path / "ckpt"), save_dict={"net": net}, save_final=True),
        ReconstructionSaver(tmp_path / "png", patch_size=(2, 2)),
    ]
    handlers = [
        everywhere[0],
        writers[0],
        everywhere[1],
        writers[1],
        everywhere[2],
        writers[2],
        writers[3],
        everywhere[3],
    ]
    assert rank0_only(handlers, rank=0) == handlers
    assert rank0_only(None, rank=0) == [] and rank0_only(None, rank=1) == []
    assert len(list(tb_dir.glob("events.out.tfevents*"))) == 1
    assert rank0_only(handlers, rank=1) == everywhere  # order kept
    assert not list(tb_dir.glob("events.out.tfevents*"))  # the left-out TensorBoard handler leaves no file behind
    assert rank0_only(handlers) == handlers  # no process group: rank 0


class _ResumingSaver(CheckpointSaver):
    """A checkpoint saver that also restores the last checkpoint when ``resume`` is true."""

    def __init__(self, resume: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.resume = resume


def test_rank0_only_keeps_a_resuming_saver_on_every_rank(tmp_path):
    net = torch.nn.Linear(2, 2)
    saving = _ResumingSaver(False, save_dir=str(tmp_path), save_dict={"net": net}, save_interval=1)
    resuming = _ResumingSaver(True, save_dir=str(tmp_path), save_dict={"net": net}, save_interval=1)
    assert rank0_only([saving, resuming], rank=1) == [resuming]  # every rank must load the state it resumes from
    assert rank0_only([saving, resuming], rank=0) == [saving, resuming]


def test_distributed_trainer_trains_the_network_in_ddp(single_process_group):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    before = [p.detach().clone() for p in net.parameters()]
    data = [{"image": torch.randn(4, 3), "label": torch.randn(4, 2)} for _ in range(3)]
    trainer = DistributedTrainer(
        device="cpu",
        network=net,
        max_epochs=1,
        train_data_loader=data,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
    )
    assert isinstance(trainer.network, torch.nn.parallel.DistributedDataParallel) and trainer.network.module is net
    trainer.run()
    assert trainer.state.iteration == 3
    assert all(not torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))  # the bare net trained
