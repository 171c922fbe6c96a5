"""The phantom command line (:mod:`shared_networks.cli.phantoms`): ``btcv``, ``cxr``, ``msd`` and ``brats2021``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest

from shared_networks.cli.phantoms import main


def test_btcv_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "cli"
    main(["btcv", str(output), "--num_cases", "2", "--shape", "32,32,16", "--spacing", "9,9,16"])
    assert str(output) in capsys.readouterr().out
    content = json.loads((output / "dataset_0.json").read_text())
    assert len(content["training"]) == 1 and len(content["validation"]) == 1
    assert nib.load(output / "imagesTr" / "img0002.nii.gz").shape == (32, 32, 16)


@pytest.mark.slow
def test_command_line_module(tmp_path: Path) -> None:
    output = tmp_path / "cli"
    command = [sys.executable, "-m", "shared_networks.cli.phantoms", "btcv", str(output), "--num_cases", "1"]
    result = subprocess.run(
        [*command, "--shape", "[24,24,12]"], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (output / "labelsTr" / "label0001.nii.gz").is_file()


def test_cxr_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["cxr", str(tmp_path / "cli"), "--num_patients", "3", "--size", "32", "--seed", "1"])
    assert str(tmp_path / "cli") in capsys.readouterr().out
    assert (tmp_path / "cli" / "test_list.txt").read_text().strip()


def test_brain_command_lines(tmp_path: Path) -> None:
    main(["msd", str(tmp_path / "m"), "--num_cases", "1", "--num_unlabelled", "0", "--shape", "[16,16,12]"])
    assert nib.load(tmp_path / "m" / "imagesTr" / "BRATS_001.nii.gz").shape == (16, 16, 12, 4)
    main(["brats2021", str(tmp_path / "b"), "--num_cases", "1", "--num_unlabelled", "0", "--shape", "[16,16,12]"])
    assert nib.load(tmp_path / "b" / "BraTS2021_00000" / "BraTS2021_00000_t2.nii.gz").shape == (16, 16, 12)
