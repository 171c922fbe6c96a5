"""Split lists and split files of a data set: empty lists, an image in two lists, a patient on both sides of the
ChestX-ray14 split and entries leading outside the data set folder are errors of ``cli.validate``, and ``cli.prepare``
stops with the same message, writing nothing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from shared_networks.cli import prepare, validate
from shared_networks.data.btcv import write_btcv_datalist
from shared_networks.validation.datasets import validate_brats, validate_btcv, validate_cxr14
from shared_networks.validation.problems import DatasetError, ValidationReport

REPO = Path(__file__).resolve().parents[3]


def _nifti(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _volume(shape: tuple[int, ...], dtype: str = "float32", modulo: int = 14) -> np.ndarray:
    return (np.arange(np.prod(shape)) % modulo).reshape(shape).astype(dtype)


def _entry(n: int) -> dict[str, str]:
    return {"image": f"imagesTr/img{n:04d}.nii.gz", "label": f"labelsTr/label{n:04d}.nii.gz"}


def _btcv(root: Path, split: dict | None = None, cases: tuple[int, ...] = (1, 2, 3)) -> Path:
    """Tutorial layout with ``cases`` and a ``dataset_0.json`` (default: 1 and 2 training, 3 validation)."""
    for n in cases:
        _nifti(root / "imagesTr" / f"img{n:04d}.nii.gz", _volume((6, 6, 4)))
        _nifti(root / "labelsTr" / f"label{n:04d}.nii.gz", _volume((6, 6, 4), "uint8"))
    split = {"training": [_entry(1), _entry(2)], "validation": [_entry(3)]} if split is None else split
    (root / "dataset_0.json").write_text(json.dumps(split))
    return root


def _msd(root: Path, content: dict) -> Path:
    for n in (1, 2):
        _nifti(root / "imagesTr" / f"BRATS_00{n}.nii.gz", _volume((6, 6, 4, 4), modulo=17))
        _nifti(root / "labelsTr" / f"BRATS_00{n}.nii.gz", _volume((6, 6, 4), "uint8", 4))
    _nifti(root / "imagesTs" / "BRATS_003.nii.gz", _volume((6, 6, 4, 4), modulo=17))
    modality = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    (root / "dataset.json").write_text(json.dumps({"modality": modality, **content}))
    return root


def _cxr14(root: Path, train_val: list[int], test: list[int]) -> Path:
    """NIH layout: image ``0000000P_00K.png`` of patient P for P in 1..4, K in 0..1; the lists name image numbers
    ``2 * (P - 1) + K``."""
    names = [f"0000000{p}_00{k}.png" for p in range(1, 5) for k in (0, 1)]
    root.mkdir(parents=True)
    rows = [f"{n},No Finding,0,{n[7]},50,M,PA,8,8,0.1,0.1" for n in names]
    (root / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n" + "\n".join(rows) + "\n"
    )
    (root / "train_val_list.txt").write_text("".join(f"{names[i]}\n" for i in train_val))
    (root / "test_list.txt").write_text("".join(f"{names[i]}\n" for i in test))
    (root / "images").mkdir()
    for name in names:
        Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(root / "images" / name)
    return root


def _errors(report: ValidationReport, name: str) -> list[str]:
    return [p.message for p in report.errors if Path(p.path).name == name]


@pytest.fixture(autouse=True)
def no_closed_log_streams():
    """Root-logger handlers left by earlier tests on a captured stream that is closed now (a bundle's logging.conf
    run under capture) are set aside for the test, so that their 'Logging error' does not enter the stderr read here."""
    root = logging.getLogger()
    stale = [h for h in root.handlers if getattr(getattr(h, "stream", None), "closed", False)]
    for h in stale:
        root.removeHandler(h)
    yield
    for h in stale:
        root.addHandler(h)


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], output: Path) -> str:
    """Run ``cli.prepare`` in-process: it must exit 1 (no exception, so no traceback) and write nothing."""
    with pytest.raises(SystemExit) as info:
        prepare.main([*argv, "--output_json", str(output)])
    assert info.value.code == 1 and not output.exists()
    return capsys.readouterr().err


# ---- BTCV dataset_0.json ----

_EMPTY = "holds no image"
_BTCV_SPLITS = {
    "empty validation": ({"training": [_entry(1), _entry(2)], "validation": []}, "the 'validation' list", _EMPTY),
    "no validation": ({"training": [_entry(1), _entry(2), _entry(3)]}, "the 'validation' list", _EMPTY),
    "empty training": ({"training": [], "validation": [_entry(3)]}, "the 'training' list", _EMPTY),
    "overlap": ({"training": [_entry(1), _entry(2)], "validation": [_entry(2)]}, "'training' list", "share images"),
    "test overlap": (
        {"training": [_entry(1)], "validation": [_entry(3)], "test": ["imagesTr/img0003.nii.gz"]},
        "'validation' list",
        "share images",
    ),
}


@pytest.mark.parametrize("case", list(_BTCV_SPLITS))
def test_btcv_split_list_problems_are_errors(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    split, what, problem = _BTCV_SPLITS[case]
    root = _btcv(tmp_path / "btcv", split)
    report = validate_btcv(root)
    (message,) = _errors(report, "dataset_0.json")
    assert what in message and problem in message and str(root / "dataset_0.json") in message, report.format()
    with pytest.raises(SystemExit) as info:
        validate.main(["btcv", "--dataset_dir", str(root)])
    assert info.value.code == 1 and problem in capsys.readouterr().out
    err = _refused(capsys, ["btcv", "--dataset_dir", str(root), "--split", "dataset_json"], tmp_path / "d.json")
    assert "dataset_0.json" in err and problem in err and "Traceback" not in err


def test_real_btcv_split_file_is_fine(shared_data) -> None:
    report = validate_btcv(shared_data("btcv"))
    assert report.ok and not report.problems, report.format()


# ---- entries leading outside the data set folder ----


def _outside_case(tmp_path: Path) -> Path:
    """A labelled case outside the data set folder, NaN in its image."""
    image = _volume((6, 6, 4))
    image[0, 0, 0] = np.nan
    _nifti(tmp_path / "outside" / "img.nii.gz", image)
    _nifti(tmp_path / "outside" / "label.nii.gz", _volume((6, 6, 4), "uint8"))
    return tmp_path / "outside"


@pytest.mark.parametrize("form", ["dotdot", "absolute", "symlink"])
def test_dataset_json_entries_outside_the_folder_are_refused(
    form: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = _outside_case(tmp_path)
    root = tmp_path / "btcv"
    if form == "dotdot":
        entry = {"image": "../outside/img.nii.gz", "label": "../outside/label.nii.gz"}
    elif form == "absolute":
        entry = {"image": str(outside / "img.nii.gz"), "label": str(outside / "label.nii.gz")}
    else:
        (root / "extra").mkdir(parents=True)
        (root / "extra" / "img.nii.gz").symlink_to(outside / "img.nii.gz")
        (root / "extra" / "label.nii.gz").symlink_to(outside / "label.nii.gz")
        entry = {"image": "extra/img.nii.gz", "label": "extra/label.nii.gz"}
    _btcv(root, {"training": [_entry(1), entry], "validation": [_entry(2)]}, cases=(1, 2))
    report = validate_btcv(root)
    messages = _errors(report, "dataset_0.json")
    assert len(messages) == 2 and all("entry 1 of 'training'" in m for m in messages), report.format()
    assert f"which leads to '{outside / 'img.nii.gz'}', outside the data set folder '{root}'" in messages[0]
    assert not any("NaN" in p.message for p in report.problems)  # refused, never read
    output = tmp_path / "datalist.json"
    with pytest.raises(DatasetError, match="outside the data set folder"):
        prepare.prepare_btcv(root, output, split="dataset_json")
    assert not output.exists()
    with pytest.raises(ValueError, match="dataset_0.json': entry 1 of 'training' names the image"):
        write_btcv_datalist(root, output, split="dataset_json")  # unchecked: the datalist builder refuses too
    err = _refused(
        capsys, ["btcv", "--dataset_dir", str(root), "--split", "dataset_json", "--validate", "false"], output
    )
    assert "outside the data set folder" in err and "Traceback" not in err


def test_dataset_json_files_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file ``dataset_0.json`` names outside imagesTr/labelsTr goes into the datalist: it is checked too."""
    root = _btcv(tmp_path / "btcv", cases=(1, 3))
    nan = _volume((6, 6, 4))
    nan[1, 1, 1] = np.nan
    _nifti(root / "extra" / "img0002.nii.gz", nan)
    _nifti(root / "extra" / "label0002.nii.gz", _volume((6, 6, 4), "uint8"))
    split = {
        "training": [_entry(1), {"image": "extra/img0002.nii.gz", "label": "extra/label0002.nii.gz"}],
        "validation": [_entry(3), _entry(4)],  # case 4 is not on disk
    }
    (root / "dataset_0.json").write_text(json.dumps(split))
    report = validate_btcv(root)
    assert _errors(report, "img0002.nii.gz") == ["1 of 144 voxels are not finite (1 NaN, 0 inf)"], report.format()
    assert _errors(report, "img0004.nii.gz") == ["missing file"] and _errors(report, "label0004.nii.gz")
    err = _refused(capsys, ["btcv", "--dataset_dir", str(root), "--split", "dataset_json"], tmp_path / "d.json")
    assert "extra/img0002.nii.gz: 1 of 144 voxels are not finite" in err


def test_command_line_refusal_has_no_traceback(tmp_path: Path) -> None:
    _outside_case(tmp_path)
    outside = {"image": "../outside/img.nii.gz", "label": "../outside/label.nii.gz"}
    root = _btcv(tmp_path / "btcv", {"training": [outside], "validation": [_entry(1)]}, cases=(1,))
    output = tmp_path / "d.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared_networks.cli.prepare",
            "btcv",
            "--dataset_dir",
            str(root),
            "--output_json",
            str(output),
            "--split",
            "dataset_json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "dataset_0.json" in result.stderr and "outside the data set folder" in result.stderr
    assert not output.exists()


# ---- MSD dataset.json ----


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"training": [], "test": []}, "the 'training' list of"),
        (
            {
                "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
                "test": ["./imagesTr/BRATS_001.nii.gz"],
            },
            "share images",
        ),
        (
            {"training": [{"image": "../../etc/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}]},
            "outside the data set folder",
        ),
    ],
)
def test_msd_dataset_json_lists(content: dict, expected: str, tmp_path: Path, capsys) -> None:
    root = _msd(tmp_path / "msd", content)
    report = validate_brats(root)
    (message,) = _errors(report, "dataset.json")
    assert expected in message and str(root / "dataset.json") in message, report.format()
    err = _refused(capsys, ["brats", "--dataset_dir", str(root), "--num_folds", "3"], tmp_path / "d.json")
    assert expected in err and "dataset.json" in err


def test_msd_dataset_json_without_lists_is_fine(tmp_path: Path) -> None:
    report = validate_brats(_msd(tmp_path / "msd", {}))
    assert report.ok, report.format()


# ---- ChestX-ray14 train_val_list.txt / test_list.txt ----

_CXR14_SPLITS = {
    "empty test list": ([0, 1, 2, 3], [], "test_list.txt' holds no image"),
    "empty train_val list": ([], [4, 5], "train_val_list.txt' holds no image"),
    "image in both": ([0, 1, 2, 3, 4], [4, 5], "share images: 00000003_000.png"),
    "patient in both": ([0, 1, 2, 3, 4], [5, 6, 7], "1 patient(s) have images in both"),
}


@pytest.mark.parametrize("case", list(_CXR14_SPLITS))
def test_cxr14_split_list_problems_are_errors(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_val, test, expected = _CXR14_SPLITS[case]
    root = _cxr14(tmp_path / "cxr", train_val, test)
    report = validate_cxr14(root)
    messages = [p.message for p in report.errors]
    assert len(messages) == 1 and expected in messages[0], report.format()
    assert report.errors[0].path.endswith(".txt")
    err = _refused(capsys, ["cxr14", "--dataset_dir", str(root), "--num_val", "1"], tmp_path / "d.json")
    assert expected in err and "Traceback" not in err


def test_cxr14_patient_wise_split_is_fine(tmp_path: Path) -> None:
    report = validate_cxr14(_cxr14(tmp_path / "cxr", [0, 1, 2, 3], [4, 5, 6, 7]))
    assert report.ok and not report.problems, report.format()
