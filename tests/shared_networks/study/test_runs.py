"""Running the bundle's workflows: override words, the subprocess runner's failure message."""

from __future__ import annotations

import pytest

from shared_networks.study.runs import parse_overrides, subprocess_runner


def test_overrides():
    assert parse_overrides("--max_epochs 2 --train#trainer#max_epochs 3") == [
        "--max_epochs",
        "2",
        "--train#trainer#max_epochs",
        "3",
    ]
    with pytest.raises(ValueError, match="pairs"):
        parse_overrides("--max_epochs")


@pytest.mark.slow  # starts python -m monai.bundle
def test_a_failing_bundle_command_names_its_log(tmp_path):
    log = tmp_path / "run" / "train.log"
    with pytest.raises(RuntimeError, match="train.log") as failure:
        subprocess_runner(["--config_file", str(tmp_path / "absent.yaml")], log)
    assert "exit" in str(failure.value) and "absent.yaml" in log.read_text()


def test_time_left_from_the_finished_runs_seconds_per_item():
    from shared_networks.study.runs import time_left

    rows = [
        {"arm": "mae", "status": "finished", "wall_s": "100", "n_train": "50"},  # 2 s per item
        {"arm": "mae", "status": "finished", "wall_s": "50", "n_train": "50"},  # together 1.5 s per item
        {"arm": "scratch", "status": "finished", "wall_s": "30", "n_train": "10"},  # 3 s per item
        {"arm": "probe_mae", "status": "running", "wall_s": "", "n_train": "10"},  # not finished: not counted
    ]
    # mae 20 items at 1.5 s, scratch 10 at 3 s, probe_mae (none finished) 10 at the overall 180 s / 110 items
    assert time_left(rows, [("mae", 20), ("scratch", 10), ("probe_mae", 10)]) == pytest.approx(30 + 30 + 1800 / 110)
    assert time_left(rows, []) == 0
    assert time_left(rows[3:], [("mae", 5)]) is None
