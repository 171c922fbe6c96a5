"""A live Orthanc PACS (``scripts/orthanc.sh``, Debian's orthanc and orthanc-dicomweb): the written CT series and two
radiographs go in over STOW-RS; QIDO-RS lists them under the right UIDs; WADO-RS returns the pixel data written.
Also the script's refusals, its start/status/stop cycle, and who may reach the server (credentials, DICOM port).

Uses the real BTCV CT and ChestX-ray14 PNGs of ``../shared/data`` where present, small synthetic images otherwise.
Skips, saying why, where Orthanc is not installed (``bash scripts/setup_orthanc.sh``; ``.ci/run`` runs it).
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hospital_helpers import (
    SHARED_DATA,
    Pacs,
    dicom_association_answer,
    multipart_parts,
    orthanc_sh,
    running_orthanc,
    wait_until_gone,
    write_nifti,
)

from shared_networks.dicom import StowError, read_credentials, stow_rs, write_ct_series, write_radiograph


@dataclass
class Uploaded:
    ct_files: list[Path]
    radiographs: list[Path]
    answers: list[dict]

    @staticmethod
    def uids(path: Path) -> tuple[str, str, str]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def sample_inputs(folder: Path) -> tuple[Path, list]:
    """The real CT and two real radiographs where ``../shared/data`` has them, else synthetic ones."""
    ct = SHARED_DATA / "btcv" / "imagesTr" / "img0001.nii.gz"
    pngs = sorted((SHARED_DATA / "chestxray14" / "images").glob("0000*_000.png"))[:2]
    if not ct.is_file():
        volume = np.random.default_rng(0).integers(-1024, 2000, size=(16, 12, 5)).astype(np.int16)
        ct = write_nifti(folder / "synthetic_ct.nii.gz", volume, np.diag([0.8, 0.8, 2.5, 1.0]))
    if len(pngs) < 2:
        pngs = [np.random.default_rng(i).integers(0, 256, size=(64, 48)).astype(np.uint8) for i in range(2)]
    return ct, pngs


@pytest.fixture(scope="module")
def uploaded(pacs: Pacs, tmp_path_factory) -> Uploaded:
    """A CT series (one study) and two radiographs (one patient, one study, two series: DX MONOCHROME2 and CR
    MONOCHROME1), sent to the PACS with STOW-RS."""
    folder = tmp_path_factory.mktemp("dicom")
    ct, pngs = sample_inputs(folder)
    ct_files = write_ct_series(ct, folder / "ct", patient_id="HOSP-CT-1", study_description="abdomen CT")
    study = pydicom.uid.generate_uid()
    radiographs = [
        write_radiograph(pngs[0], folder / "dx.dcm", patient_id="HOSP-CXR-1", study_uid=study, series_number=1),
        write_radiograph(
            pngs[1],
            folder / "cr.dcm",
            patient_id="HOSP-CXR-1",
            study_uid=study,
            series_number=2,
            modality="CR",
            photometric="MONOCHROME1",
            window=(120, 200),
        ),
    ]
    answers = stow_rs(pacs.dicomweb, [*ct_files, *radiographs], auth=read_credentials(pacs.storage / "credentials"))
    return Uploaded(ct_files, radiographs, answers)


@pytest.mark.slow  # a live Orthanc: its start and stop take seconds
def test_stow_answer_references_every_instance(uploaded: Uploaded) -> None:
    referenced = {item["00081155"]["Value"][0] for answer in uploaded.answers for item in answer["00081199"]["Value"]}
    assert referenced == {Uploaded.uids(p)[2] for p in [*uploaded.ct_files, *uploaded.radiographs]}
    assert all(not (answer.get("00081198") or {}).get("Value") for answer in uploaded.answers)


@pytest.mark.slow  # a live Orthanc: its start and stop take seconds
def test_qido_lists_the_studies_and_series(pacs: Pacs, uploaded: Uploaded) -> None:
    ct_study, ct_series, _ = Uploaded.uids(uploaded.ct_files[0])
    (cxr_study, dx_series, _), (cxr_study_2, cr_series, _) = map(Uploaded.uids, uploaded.radiographs)
    assert cxr_study == cxr_study_2
    studies = {s["0020000D"]["Value"][0]: s for s in pacs.json("dicom-web/studies")}
    assert {ct_study, cxr_study} <= set(studies)  # (other tests of this module add studies of their own)
    assert studies[ct_study]["00100020"]["Value"] == ["HOSP-CT-1"]
    series = pacs.json(f"dicom-web/studies/{cxr_study}/series")
    assert {s["0020000E"]["Value"][0]: s["00080060"]["Value"][0] for s in series} == {dx_series: "DX", cr_series: "CR"}
    ct_listing = pacs.json(f"dicom-web/studies/{ct_study}/series")
    assert [(s["0020000E"]["Value"][0], s["00080060"]["Value"][0]) for s in ct_listing] == [(ct_series, "CT")]
    instances = pacs.json(f"dicom-web/studies/{ct_study}/series/{ct_series}/instances")
    assert len(instances) == len(uploaded.ct_files)
    found = pacs.json("dicom-web/studies?PatientID=HOSP-CXR-1")
    assert [s["0020000D"]["Value"][0] for s in found] == [cxr_study]


@pytest.mark.slow  # a live Orthanc: its start and stop take seconds
def test_wado_rs_returns_the_written_pixel_data(pacs: Pacs, uploaded: Uploaded) -> None:
    for path in [*uploaded.ct_files, *uploaded.radiographs]:
        study, series, instance = Uploaded.uids(path)
        url = f"dicom-web/studies/{study}/series/{series}/instances/{instance}"
        status, content_type, body = pacs.request(url, accept='multipart/related; type="application/dicom"')
        assert status == 200, body[:300]
        (part,) = multipart_parts(body, content_type)
        written = pydicom.dcmread(path)
        served = pydicom.dcmread(io.BytesIO(part))
        assert served.SOPInstanceUID == written.SOPInstanceUID
        assert served.PixelData == written.PixelData
    for path in (uploaded.ct_files[0], *uploaded.radiographs):  # the raw frame, as a viewer fetches it
        study, series, instance = Uploaded.uids(path)
        url = f"dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/1"
        status, content_type, body = pacs.request(url, accept='multipart/related; type="application/octet-stream"')
        assert status == 200, body[:300]
        assert multipart_parts(body, content_type) == [pydicom.dcmread(path).PixelData]


@pytest.mark.slow  # a live Orthanc: its start and stop take seconds
def test_every_request_needs_the_credentials(pacs: Pacs, uploaded: Uploaded) -> None:
    assert pacs.request("system", auth=False)[0] == 401
    assert pacs.request("dicom-web/studies", auth=False)[0] == 401
    with pytest.raises(StowError, match=r"dx\.dcm.*HTTP 401"):
        stow_rs(pacs.dicomweb, uploaded.radiographs[:1], auth=(pacs.auth[0], "wrong"))
    assert stat.S_IMODE((pacs.storage / "credentials").stat().st_mode) == 0o600
    assert stat.S_IMODE((pacs.storage / "orthanc.json").stat().st_mode) == 0o600


@pytest.mark.slow  # a live Orthanc: its start and stop take seconds
def test_stow_names_the_files_the_server_did_not_store(pacs: Pacs, tmp_path: Path) -> None:
    auth = read_credentials(pacs.storage / "credentials")
    files = [
        write_radiograph(np.full((32, 32), i, np.uint8), tmp_path / f"{i}.dcm", patient_id="BATCH") for i in range(3)
    ]
    answers = stow_rs(pacs.dicomweb, files, auth=auth, batch_bytes=1)  # one request per file
    assert len(answers) == 3 and len(pacs.json("dicom-web/studies?PatientID=BATCH")) == 3
    truncated = tmp_path / "truncated.dcm"  # pydicom reads its header; the server cannot parse it
    truncated.write_bytes(files[0].read_bytes()[:-500])
    fine = write_radiograph(np.ones((32, 32), np.uint8), tmp_path / "fine.dcm", patient_id="BATCH")
    with pytest.raises(StowError, match=r"HTTP 400 .*truncated\.dcm: not stored") as error:
        stow_rs(pacs.dicomweb, [truncated, fine], auth=auth)
    assert "fine.dcm: not stored" not in str(error.value)
    with pytest.raises(ValueError, match=r"README\.md is not a DICOM file"):
        stow_rs(pacs.dicomweb, [Path(__file__).parents[2] / "README.md"], auth=auth)


@pytest.mark.slow  # a live Orthanc: its start and stop take seconds
def test_the_dicom_port_refuses_unknown_callers(pacs: Pacs) -> None:
    assert dicom_association_answer(pacs.dicom_port, "INTRUDER") == 3  # A-ASSOCIATE-RJ
    modality = json.dumps({"AET": "TESTSCU", "Host": "127.0.0.1", "Port": 11112}).encode()
    assert pacs.request("modalities/TESTSCU", method="PUT", body=modality)[0] == 200
    try:
        assert dicom_association_answer(pacs.dicom_port, "TESTSCU") == 2  # registered: A-ASSOCIATE-AC
    finally:
        assert pacs.request("modalities/TESTSCU", method="DELETE")[0] == 200
    assert dicom_association_answer(pacs.dicom_port, "TESTSCU") == 3


@pytest.mark.slow  # a live Orthanc: its start and stop take seconds
def test_start_status_stop(tmp_path: Path) -> None:
    with running_orthanc(tmp_path / "pacs") as server:
        config = json.loads((server.storage / "orthanc.json").read_text())
        assert config["RemoteAccessAllowed"] is False and config["AuthenticationEnabled"] is True
        assert config["DicomWeb"]["Root"] == "/dicom-web/" and config["StorageDirectory"].startswith(
            str(server.storage)
        )
        status = orthanc_sh("status", "--storage", str(server.storage))
        assert f"running (pid {server.pid})" in status.stdout
        again = orthanc_sh("start", "--storage", str(server.storage), "--http_port", str(server.http_port))
        assert "already running" in again.stdout
        pid = server.pid
        stopped = orthanc_sh("stop", "--storage", str(server.storage))
        assert f"stopped Orthanc (pid {pid})" in stopped.stdout
        assert wait_until_gone(pid, 5.0) and not (server.storage / "orthanc.pid").exists()
        assert orthanc_sh("status", "--storage", str(server.storage), check=False).returncode == 3
        assert (server.storage / "orthanc.log").stat().st_size > 0


@pytest.mark.parametrize(
    ("storage", "extra", "message"),
    [
        ("a_file", [], "exists and is not a directory"),
        ("a_file/below", [], "cannot be created"),
        ("/proc/sys", [], "is not a directory this user .* can write"),
        ("ok", ["--http_port", "70000"], "--http_port takes a port number"),
        ("ok", ["--http_port", "8042", "--dicom_port", "8042"], "are both 8042"),
        ("ok", ["--colour", "red"], "unknown option '--colour'"),
    ],
)
def test_orthanc_script_refuses_bad_arguments(tmp_path: Path, storage: str, extra: list[str], message: str) -> None:
    (tmp_path / "a_file").write_text("")
    folder = storage if os.path.isabs(storage) else str(tmp_path / storage)
    result = orthanc_sh("start", "--storage", folder, *extra, check=False)
    assert result.returncode == 2
    assert re.search(message, result.stderr), result.stderr
    assert orthanc_sh("status", "--storage", str(tmp_path / "never"), check=False).returncode == 2
