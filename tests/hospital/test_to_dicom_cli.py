"""The command line ``python -m shared_networks.cli.to_dicom ct|radiograph`` (:mod:`shared_networks.cli.to_dicom`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hospital_helpers import Pacs, write_nifti
from PIL import Image

from shared_networks.cli.to_dicom import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    main(argv)
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    volume = np.arange(6 * 5 * 3, dtype=np.int16).reshape(6, 5, 3) - 40
    ct = write_nifti(tmp_path / "ct.nii.gz", volume, np.diag([0.9, 0.9, 3.0, 1.0]))
    png = tmp_path / "cxr.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(32, 24)).astype(np.uint8)).save(png)
    return ct, png


def test_ct_and_radiograph(tmp_path: Path, inputs, capsys: pytest.CaptureFixture[str]) -> None:
    ct, png = inputs
    summary = run(
        ["ct", str(ct), str(tmp_path / "series"), "--patient_id", "00012", "--study_date", "20240102"], capsys
    )
    assert len(summary["files"]) == 3 and summary["stored"] is None
    first = pydicom.dcmread(summary["files"][0])
    assert (first.PatientID, first.StudyDate, first.StudyInstanceUID) == ("00012", "20240102", summary["study_uid"])
    argv = ["radiograph", str(png), str(tmp_path / "x.dcm"), "--patient_id", "123", "--photometric", "MONOCHROME1"]
    summary = run([*argv, "--window", "100,150", "--modality", "CR"], capsys)
    ds = pydicom.dcmread(summary["files"][0])
    assert (ds.PatientID, ds.Modality, ds.PhotometricInterpretation) == ("123", "CR", "MONOCHROME1")
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (156.0, 150.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["radiograph", "{tmp}/rgba.png", "{tmp}/x.dcm", "--patient_id", "P"], "rgba.png: PIL mode 'RGBA'"),
        (["radiograph", "{tmp}/cxr.png", "{tmp}/x.dcm", "--patient_id", "P", "--bits_stored", "20"], "bits_stored 20"),
        (["ct", "{tmp}/cxr.png", "{tmp}/s", "--patient_id", "P"], "cxr.png cannot be read as a NIfTI volume"),
        (["ct", "{tmp}/ct.nii.gz", "{tmp}/s", "--patient_id", "P", "--stow_auth", "c"], "--stow_auth is given without"),
        (["ct", "{tmp}/ct.nii.gz", "{tmp}/s", "--patient_id", "P", "--study_uid", "1.20"], "give it as a string"),
    ],
)
def test_refusals_exit_with_a_message(tmp_path: Path, inputs, capsys, argv: list[str], message: str) -> None:
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    with pytest.raises(SystemExit) as exited:
        main([a.format(tmp=tmp_path) for a in argv])
    assert exited.value.code == 1
    assert message in capsys.readouterr().err


@pytest.mark.slow  # a live Orthanc
def test_upload_to_a_pacs(pacs: Pacs, tmp_path: Path, inputs, capsys: pytest.CaptureFixture[str]) -> None:
    ct, png = inputs
    stow = ["--stow_url", pacs.dicomweb, "--stow_auth", str(pacs.storage / "credentials")]
    summary = run(["ct", str(ct), str(tmp_path / "series"), "--patient_id", "CLI-1", *stow], capsys)
    assert summary["stored"] == 3
    assert [s["0020000D"]["Value"][0] for s in pacs.json("dicom-web/studies?PatientID=CLI-1")] == [summary["study_uid"]]
    summary = run(["radiograph", str(png), str(tmp_path / "x.dcm"), "--patient_id", "CLI-2", *stow], capsys)
    assert summary["stored"] == 1
    series = pacs.json(f"dicom-web/studies/{summary['study_uid']}/series")
    assert [s["0020000E"]["Value"][0] for s in series] == [summary["series_uid"]]
