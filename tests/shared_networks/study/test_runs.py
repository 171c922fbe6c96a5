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
