"""Resumable checkpoints and per-epoch seeding (engine.checkpoints, engine.seeding) on small ignite engines."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandFlipd, RandGaussianNoised

from shared_networks.engine.checkpoints import AtomicCheckpointSaver, ResumableCheckpointSaver, load_checkpoint
from shared_networks.engine.seeding import EpochSeeder


class Crash(RuntimeError):
    """Stands for a killed run."""


def _parts(seed: int = 0, num_workers: int = 0):
    """Data with random transforms, a shuffling loader, a network with dropout, an optimizer and a schedule."""
    torch.manual_seed(seed)
    data = [{"x": np.full((1, 4), float(i), dtype=np.float32), "y": np.float32(i % 2)} for i in range(6)]
    transform = Compose([RandFlipd("x", prob=0.5, spatial_axis=0), RandGaussianNoised("x", prob=1.0, std=0.1)])
    loader = DataLoader(Dataset(data, transform), batch_size=2, shuffle=True, num_workers=num_workers)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return loader, net, opt, sched


def _trainer(net, opt, sched, record: list | None = None) -> Engine:
    def step(engine, batch):
        net.train()
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(batch["x"][:, 0]).squeeze(1), batch["y"])
        loss.backward()
        opt.step()
        sched.step()
        if record is not None:
            record.append((engine.state.epoch, batch["x"].clone()))
        return loss.item()

    return Engine(step)


def _run(
    folder: Path,
    max_epochs: int,
    crash_after: int | None = None,
    resume: bool = False,
    seeder: bool = True,
    load_path=None,
    seed: int = 0,
    record: list | None = None,
    num_workers: int = 0,
):
    loader, net, opt, sched = _parts(123 if resume else seed, num_workers)  # a resumed run starts from other weights
    engine = _trainer(net, opt, sched, record)
    if seeder:
        EpochSeeder(seed, loader.dataset).attach(engine)
    saver = ResumableCheckpointSaver(
        folder,
        {"network": net, "optimizer": opt, "lr_scheduler": sched},
        file_prefix="train",
        n_saved=2,
        resume=resume,
        load_path=load_path,
    )
    saver.attach(engine)
    if crash_after is not None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=crash_after), lambda e: (_ for _ in ()).throw(Crash()))
        with pytest.raises(Crash):
            engine.run(loader, max_epochs=max_epochs)
    else:
        engine.run(loader, max_epochs=max_epochs)
    return net, opt, sched, engine, saver


def test_resumed_run_ends_as_the_uninterrupted_one(tmp_path):
    net_a, opt_a, sched_a, _, _ = _run(tmp_path / "a", 4)
    _run(tmp_path / "b", 4, crash_after=2)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [f"train_checkpoint_epoch={e}.pt" for e in (1, 2)]
    net_b, opt_b, sched_b, engine, saver = _run(tmp_path / "b", 4, resume=True)
    assert saver.resumed_from == tmp_path / "b" / "train_checkpoint_epoch=2.pt"
    assert engine.state.epoch == 4 and engine.state.iteration == 12
    for (name, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert sched_a.state_dict() == sched_b.state_dict()
    assert torch.equal(opt_a.state_dict()["state"][0]["exp_avg"], opt_b.state_dict()["state"][0]["exp_avg"])
    # the last 2 checkpoints are kept, as in the uninterrupted run
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(p.name for p in (tmp_path / "a").iterdir())
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [f"train_checkpoint_epoch={e}.pt" for e in (3, 4)]


def test_resume_is_exact_with_loader_workers(tmp_path):
    """Worker processes take their transforms' seeds from torch's generator, which the epoch's seed fixes."""
    net_a, *_ = _run(tmp_path / "a", 3, num_workers=2)
    _run(tmp_path / "b", 3, crash_after=2, num_workers=2)
    net_b, *_ = _run(tmp_path / "b", 3, resume=True, num_workers=2)
    for (name, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    net_c, *_ = _run(tmp_path / "c", 3, num_workers=0)  # in-process transforms draw other numbers
    pairs = zip(net_a.state_dict().values(), net_c.state_dict().values(), strict=True)
    assert not all(torch.equal(a, c) for a, c in pairs)


def test_without_epoch_seeding_a_resumed_run_differs(tmp_path):
    """The seeding is what makes resume exact: without it epoch 3 draws other flips, noise and dropout masks."""
    whole, resumed = [], []
    _run(tmp_path / "a", 3, seeder=False, record=whole)
    _run(tmp_path / "b", 3, crash_after=2, seeder=False)
    _run(tmp_path / "b", 3, resume=True, seeder=False, record=resumed)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip([r for r in whole if r[0] == 3], resumed, strict=True))
    seeded_whole, seeded_resumed = [], []
    _run(tmp_path / "c", 3, record=seeded_whole)
    _run(tmp_path / "d", 3, crash_after=2)
    _run(tmp_path / "d", 3, resume=True, record=seeded_resumed)
    third = [r for r in seeded_whole if r[0] == 3]
    assert len(third) == 3 and all(torch.equal(a[1], b[1]) for a, b in zip(third, seeded_resumed, strict=True))


def test_seeds_differ_between_runs_and_epochs():
    seeder = EpochSeeder(0)
    seeds = {seeder.epoch_seed(e) for e in range(1, 50)} | {EpochSeeder(1).epoch_seed(e) for e in range(1, 50)}
    assert len(seeds) == 98 and seeder.epoch_seed(3) == EpochSeeder(0).epoch_seed(3)
    with pytest.raises(ValueError, match="seed must be an integer"):
        EpochSeeder("0")


def test_truncated_checkpoint_is_refused(tmp_path):
    _run(tmp_path, 4, crash_after=2)
    latest = tmp_path / "train_checkpoint_epoch=2.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    loader, net, opt, sched = _parts(seed=5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    engine = _trainer(net, opt, sched)
    ResumableCheckpointSaver(tmp_path, {"network": net, "optimizer": opt, "lr_scheduler": sched}, resume=True).attach(
        engine
    )
    with pytest.raises(ValueError, match=r"checkpoint '.*train_checkpoint_epoch=2\.pt' cannot be read .*truncated"):
        engine.run(loader, max_epochs=4)
    assert engine.state.iteration == 0  # nothing trained, from scratch or otherwise
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    # an earlier checkpoint can be named explicitly
    net_c, *_, engine_c, _ = _run(tmp_path, 4, resume=True, load_path=tmp_path / "train_checkpoint_epoch=1.pt")
    assert engine_c.state.epoch == 4 and engine_c.state.iteration == 12


def test_resume_without_checkpoint_or_from_another_workflow(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no checkpoint 'train_checkpoint_epoch=N.pt'"):
        _run(tmp_path / "empty", 2, resume=True)
    torch.save({"mae": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"lacks \['lr_scheduler', 'network', 'optimizer', 'trainer'\]"):
        _run(tmp_path, 2, resume=True, load_path=tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04junk")
    with pytest.raises(ValueError, match="junk.pt' cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _run(tmp_path, 2, resume=True, load_path=tmp_path / "missing.pt")


def test_a_crash_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    _run(tmp_path, 4, crash_after=2)
    good = (tmp_path / "train_checkpoint_epoch=2.pt").read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):  # half a file, then the process "dies"
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)
        raise KeyboardInterrupt

    loader, net, opt, sched = _parts()
    engine = _trainer(net, opt, sched)
    EpochSeeder(0, loader.dataset).attach(engine)
    ResumableCheckpointSaver(tmp_path, {"network": net, "optimizer": opt, "lr_scheduler": sched}, resume=True).attach(
        engine
    )
    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        engine.run(loader, max_epochs=4)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_checkpoint_epoch=1.pt", "train_checkpoint_epoch=2.pt"]
    assert (tmp_path / "train_checkpoint_epoch=2.pt").read_bytes() == good
    assert load_checkpoint(tmp_path / "train_checkpoint_epoch=2.pt")["trainer"]["iteration"] == 6


def test_bad_arguments(tmp_path):
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="reserved"):
        ResumableCheckpointSaver(tmp_path, {"trainer": net})
    with pytest.raises(ValueError, match="file_prefix"):
        ResumableCheckpointSaver(tmp_path, {"network": net}, file_prefix="")
    with pytest.raises(ValueError, match="resume must be true or false"):
        ResumableCheckpointSaver(tmp_path, {"network": net}, resume="maybe")
    assert ResumableCheckpointSaver(tmp_path, {"network": net}, resume="true").resume is True


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_checkpoint_saver(tmp_path, umask):
    """Written atomically, with the mode a plain open() gives under the umask (ignite's atomic writing would make the
    file group- and world-readable whatever the umask)."""
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_final=True, final_filename="model.pt"
    ).attach(engine)
    old = os.umask(umask)
    try:
        engine.run([0], max_epochs=1)
    finally:
        os.umask(old)
    path = tmp_path / "model.pt"
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~umask)
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["weight"], net.weight)
