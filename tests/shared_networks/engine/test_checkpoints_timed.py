"""Time-triggered resume checkpoints (ResumableCheckpointSaver's save_every_minutes) with a fake clock."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from shared_networks.engine.checkpoints import ResumableCheckpointSaver


class FakeClock:
    """Seconds that advance only when the test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _saved_epochs(folder: Path) -> list[int]:
    return sorted(int(m[1]) for p in folder.iterdir() if (m := re.match(r"^train_checkpoint_epoch=(\d+)\.pt$", p.name)))


def _new_files(folder: Path, saved: list[int]):
    return lambda engine: saved.extend(sorted(set(_saved_epochs(folder)) - set(saved)))


def _run(
    folder: Path, epoch_minutes: list[float], save_interval: int = 0, every_minutes: float = 10, n_saved: int = 20
) -> list[int]:
    """One epoch per entry of ``epoch_minutes``, each taking that long on the fake clock; the epochs saved, in the
    order they were written."""
    clock = FakeClock()
    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: 0.0)
    saved: list[int] = []
    saver = ResumableCheckpointSaver(
        folder,
        {"network": net},
        file_prefix="train",
        save_interval=save_interval,
        n_saved=n_saved,
        save_every_minutes=every_minutes,
        clock=clock,
    )

    @engine.on(Events.EPOCH_STARTED)
    def _advance(e):
        clock.now += 60.0 * epoch_minutes[e.state.epoch - 1]

    saver.attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, _new_files(folder, saved))
    engine.run([0], max_epochs=len(epoch_minutes))
    return saved


def test_time_trigger_saves_after_the_interval_and_at_the_end(tmp_path):
    # epochs of 4 min: 4, 8, 12 (>= 10: save, clock reset), 16, 20, 24 (12 since: save), 28 (last epoch: save)
    assert _run(tmp_path, [4.0] * 7) == [3, 6, 7]


def test_time_trigger_counts_from_the_last_save(tmp_path):
    # 11 min (save), 1, 1, 9 (= 11 since the save: save), 1 (last: save)
    assert _run(tmp_path, [11.0, 1.0, 1.0, 9.0, 1.0]) == [1, 4, 5]


def test_epoch_and_time_triggers_together(tmp_path):
    # every 2nd epoch by count; epoch 3 by time (10 min after epoch 2's save); epoch 5 is the last
    assert _run(tmp_path, [1.0, 1.0, 10.0, 0.5, 0.5], save_interval=2) == [2, 3, 4, 5]


def test_epoch_interval_alone_keeps_its_meaning_and_saves_the_last_epoch(tmp_path):
    assert _run(tmp_path, [100.0] * 5, save_interval=2, every_minutes=0) == [2, 4, 5]


def test_both_triggers_off_saves_nothing(tmp_path):
    assert _run(tmp_path, [30.0] * 3, save_interval=0, every_minutes=0) == []
    assert list(tmp_path.iterdir()) == []


def test_negative_triggers_are_refused(tmp_path):
    with pytest.raises(ValueError, match="save_every_minutes must be 0"):
        ResumableCheckpointSaver(tmp_path, {"network": torch.nn.Linear(1, 1)}, save_every_minutes=-1)
