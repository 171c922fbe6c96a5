"""The checking commands on crafted data sets: every problem listed, a non-zero exit, nothing written, no traceback."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from shared_networks.cli import prepare, validate


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


@pytest.fixture
def bad_btcv(shared_data, tmp_path: Path) -> Path:
    """Three copies of the real BTCV case 1: case 2 truncated, case 3 a symbolic link out of the folder."""
    src, root = shared_data("btcv"), tmp_path / "btcv"
    for n in (1, 2, 3):
        _copy(src / "imagesTr" / "img0001.nii.gz", root / "imagesTr" / f"img000{n}.nii.gz")
        _copy(src / "labelsTr" / "label0001.nii.gz", root / "labelsTr" / f"label000{n}.nii.gz")
    truncated = root / "imagesTr" / "img0002.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    (root / "labelsTr" / "label0003.nii.gz").unlink()
    (root / "labelsTr" / "label0003.nii.gz").symlink_to(src / "labelsTr" / "label0001.nii.gz")
    return root


def test_validate_lists_every_problem_and_exits_1(bad_btcv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        validate.main(["btcv", "--dataset_dir", str(bad_btcv), "--num_workers", "1"])
    assert info.value.code == 1
    out = capsys.readouterr().out
    assert "img0002.nii.gz" in out and "truncated" in out
    assert "label0003.nii.gz" in out and "symbolic link" in out
    assert "2 error(s)" in out


def test_report_json_folder_is_refused_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:  # the data set folder does not even exist: the argument comes first
        validate.main(["btcv", "--dataset_dir", str(tmp_path / "nowhere"), "--report_json", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--report_json" in err and "is a folder" in err and "nowhere" not in err


@pytest.mark.parametrize("where", ["folder", "missing_parent"])
def test_prepare_output_json_is_checked_first(tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path if where == "folder" else tmp_path / "no" / "such" / "d.json"
    with pytest.raises(SystemExit) as info:
        prepare.main(["btcv", "--dataset_dir", str(tmp_path / "nowhere"), "--output_json", str(output)])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "--output_json" in err and ("is a folder" in err or "does not exist; create it" in err)
    assert not (tmp_path / "no").exists()


def test_prepare_refuses_bad_data_and_writes_nothing(bad_btcv: Path, tmp_path: Path) -> None:
    output = tmp_path / "datalist.json"
    with pytest.raises(prepare.DatasetError) as info:
        prepare.prepare_btcv(bad_btcv, output, num_workers=1)
    assert "img0002.nii.gz" in str(info.value) and "label0003.nii.gz" in str(info.value)
    assert not output.exists()


def test_prepare_cxr14_blank_patient_is_reported_not_a_traceback(shared_data, tmp_path: Path) -> None:
    src, root = shared_data("chestxray14"), tmp_path / "cxr"
    train_val = src.joinpath("train_val_list.txt").read_text().split()[:4]
    test = src.joinpath("test_list.txt").read_text().split()[:2]
    for name in train_val + test:
        _copy(src / "images" / name, root / "images" / name)
    lines = src.joinpath("Data_Entry_2017.csv").read_text().splitlines()
    rows = [lines[0]] + [line for line in lines[1:] if line.split(",")[0] in train_val + test]
    fields = rows[1].split(",")
    fields[3] = ""
    rows[1] = ",".join(fields)
    (root / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    bomb = root / "images" / test[0]  # and a tiny PNG declaring 30000 x 30000 pixels
    raw = bytearray(bomb.read_bytes())
    struct.pack_into(">II", raw, 16, 30000, 30000)
    struct.pack_into(">I", raw, 29, zlib.crc32(bytes(raw[12:29])))
    bomb.write_bytes(bytes(raw))
    output = tmp_path / "d.json"
    repo = str(Path(__file__).resolve().parents[3])  # the package of this checkout, also in the child process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared_networks.cli.prepare",
            "cxr14",
            "--dataset_dir",
            str(root),
            "--output_json",
            str(output),
            "--num_workers",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "empty Patient ID" in result.stderr and test[0] in result.stderr and "max_pixels" in result.stderr
    assert not output.exists()
