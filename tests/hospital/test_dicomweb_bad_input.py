"""Bad input on the DICOMweb path: each is a clear answer naming the series, instance or PACS, and the server goes on.

A live Orthanc (``scripts/orthanc.sh``) holds small synthetic CT series, some of them broken the ways a PACS can
hold them: a missing slice, uneven slice spacing, a Structured Report inside a CT series or beside it in the study,
a signed 16-bit CT with rescale slope 0.5 and intercept -1024. MONAI Label (``scripts/serve_monailabel.sh --studies
<Orthanc's DICOMweb root>``, as ``test_monailabel_dicomweb.py`` serves it) is asked for each; after each bad one a good
series is still served. Then a SEG whose CT series was deleted from Orthanc (REST ``DELETE /series/<id>``), a PACS
answering 500 to everything (a second server pointed at it), and Orthanc stopped: 4xx/5xx answers that name the
problem, no traceback and no password in them, ``/info`` and ``/health`` still answered.

What ITK (MONAI Label's ``dicom_to_nifti``) does with the broken series, and so why they are refused: a series with a
missing slice is read as a shorter volume with its spacing averaged (5 slices of 3.125 mm for 6 of 2.5 mm with one
gone), uneven spacing likewise averaged, both with a warning only; labels drawn on such a volume land off the organs.
A slope of 0.5 with signed stored values is applied by ITK (a float volume in HU), so that CT is served, its HU
checked here.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hospital_helpers import REPO, Pacs, orthanc_sh, running_orthanc
from live_server import BTCV, LIVE, VENV, copy_app, free_port, fresh_weights, utf8_ctype
from pydicom.uid import BasicTextSRStorage
from test_monailabel_dicomweb import DicomwebServer, _form

from shared_networks.dicom import stow_rs, write_ct_series
from shared_networks.dicom.modules import StudyFields, new_instance

pytestmark = LIVE
SHAPE = (16, 16, 6)  # I, J, K: six slices of 2.5 mm
CACHE_EXPIRY_S = 3  # the server's QIDO cache (MONAI_LABEL_DICOMWEB_CACHE_EXPIRY): a deleted series is seen soon


def _hu() -> np.ndarray:
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 200 - 100).astype(np.int16)


def _ct(root: Path, name: str, study_uid: str | None = None) -> list[Path]:
    nifti = root / "ct.nii.gz"
    if not nifti.exists():
        nib.save(nib.Nifti1Image(_hu(), np.diag([0.8, 0.8, 2.5, 1.0])), nifti)
    return write_ct_series(nifti, root / name, patient_id=f"BAD-{name}", study_uid=study_uid, series_description=name)


def _sr(path: Path, study_uid: str, series_uid: str) -> Path:
    """A Basic Text SR (no pixels) in the given study and series."""
    ds = new_instance(BasicTextSRStorage, StudyFields("BAD-sr", study_uid=study_uid, series_uid=series_uid), "SR", 99)
    ds.ValueType, ds.ContinuityOfContent, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "SEPARATE", "", ""
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Site:
    pacs: Pacs
    server: DicomwebServer
    series: dict[str, str]  # name -> Series Instance UID
    root: Path

    def get(self, path: str) -> tuple[int, bytes]:
        status, _, body = self.server.raw("GET", path)
        return status, body

    def image(self, name_or_uid: str) -> tuple[int, bytes]:
        return self.get(f"/datastore/image?image={self.series.get(name_or_uid, name_or_uid)}")

    def still_serves(self) -> None:
        status, body = self.image("good")
        assert status == 200 and body[:2] == b"\x1f\x8b", (status, body[:300])  # the good series, as NIfTI (gzip)
        assert self.get("/info/")[0] == 200 and self.get("/health")[0] == 200


def _clear(body: bytes, *names: str) -> str:
    """The answer's text, asserted to name each of ``names`` and to hold no traceback or password."""
    text = body.decode(errors="replace")
    assert "Traceback" not in text and 'File "' not in text, text[:1000]
    for name in names:
        assert name in text, (name, text[:500])
    return text


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("bad_input")
    old = os.environ.get("MONAI_LABEL_DICOMWEB_CACHE_EXPIRY")
    os.environ["MONAI_LABEL_DICOMWEB_CACHE_EXPIRY"] = str(CACHE_EXPIRY_S)
    try:
        with running_orthanc(root / "pacs", dicom_port=0) as pacs:
            series, files = {}, []
            for name in ("good", "gap", "uneven", "slope", "with_sr", "labelled"):
                written = _ct(root, name)
                series[name] = str(pydicom.dcmread(written[0]).SeriesInstanceUID)
                if name == "gap":
                    written.pop(3).unlink()  # slice 4 of 6 missing
                if name == "uneven":
                    ds = pydicom.dcmread(written[5])
                    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 1.0]
                    ds.save_as(written[5])
                if name == "slope":  # signed stored values, slope 0.5, intercept -1024: the same HU
                    for path in written:
                        ds = pydicom.dcmread(path)
                        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                        ds.PixelData = np.round((hu + 1024.0) / 0.5).astype(np.int16).tobytes()
                        ds.PixelRepresentation, ds.RescaleSlope, ds.RescaleIntercept = 1, 0.5, -1024
                        ds.save_as(path)
                files += written
            good = pydicom.dcmread(root / "good" / "CT00001.dcm")
            with_sr = pydicom.dcmread(root / "with_sr" / "CT00001.dcm")
            stow_rs(pacs.dicomweb, files, auth=pacs.auth)
            sr_series = pydicom.uid.generate_uid()
            series["sr_series"] = sr_series  # an SR series in the good CT's study
            extra = [
                _sr(root / "sr_in_series.dcm", with_sr.StudyInstanceUID, with_sr.SeriesInstanceUID),
                _sr(root / "sr_series.dcm", good.StudyInstanceUID, sr_series),
            ]
            stow_rs(pacs.dicomweb, extra, auth=pacs.auth)

            values = {"pacs": str(pacs.storage), "pacs_port": str(pacs.http_port), "python": sys.executable}
            server = DicomwebServer(root / "monailabel", free_port(), values)
            bundle = server.bundles / BTCV
            shutil.copytree(REPO / "bundles" / BTCV / "configs", bundle / "configs")
            with utf8_ctype():
                fresh_weights(bundle, BTCV)
            copy_app(server.app)
            try:
                server.start()
                yield Site(pacs, server, series, root)
            finally:
                server.stop()
    finally:
        if old is None:
            os.environ.pop("MONAI_LABEL_DICOMWEB_CACHE_EXPIRY", None)
        else:
            os.environ["MONAI_LABEL_DICOMWEB_CACHE_EXPIRY"] = old


def test_the_good_series_is_served(site):
    site.still_serves()


@pytest.mark.parametrize("name", ["gap", "uneven"])
def test_a_series_with_a_missing_slice_or_uneven_spacing_is_refused(site, name):
    status, body = site.image(name)
    text = _clear(body, site.series[name])
    assert status == 422 and "missing slice or uneven spacing" in text, (status, text[:500])
    status, body = site.server.raw("POST", f"/infer/{BTCV}?image={site.series[name]}")[::2]
    assert status == 422 and site.series[name] in _clear(body)
    site.still_serves()


def test_a_signed_ct_with_slope_one_half_is_read_in_hu(site, tmp_path):
    status, body = site.image("slope")
    assert status == 200, body[:500]
    path = tmp_path / "slope.nii.gz"
    path.write_bytes(body)
    served = nib.load(path)
    np.testing.assert_allclose(np.asarray(served.dataobj), _hu(), atol=0.5)  # ITK applies the rescale
    np.testing.assert_allclose(np.abs(np.diag(served.affine))[:3], [0.8, 0.8, 2.5], atol=1e-4)
    site.still_serves()


def test_a_structured_report_in_a_ct_series_is_refused_naming_it(site):
    status, body = site.image("with_sr")
    text = _clear(body, site.series["with_sr"])
    if status == 422:  # downloaded, then refused by pacs_datastore.check_image_series
        assert "not an image" in text and pydicom.dcmread(site.root / "sr_in_series.dcm").SOPInstanceUID in text
    else:  # Orthanc answers WADO-RS of this series with 404
        assert status == 502 and "HTTP 404" in text, (status, text[:500])
    site.still_serves()


def test_a_structured_report_series_is_not_an_image(site):
    status, body = site.image("sr_series")
    assert 400 <= status < 500, (status, body[:500])
    _clear(body)
    site.still_serves()


def _orthanc_series_id(pacs: Pacs, uid: str) -> str:
    status, _, body = pacs.request("tools/lookup", method="POST", accept="application/json", body=uid.encode())
    assert status == 200, body[:300]
    (found,) = [f for f in json.loads(body) if f["Type"] == "Series"]
    return found["ID"]


def test_a_seg_whose_series_was_deleted(site, tmp_path):
    """The SEG stays in the PACS, its CT is gone: the training list leaves it out, its label is not found (4xx)."""
    uid = site.series["labelled"]
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[4:10, 4:10, 1:4] = 1
    path, served = tmp_path / "label.nii.gz", tmp_path / "served.nii.gz"
    served.write_bytes(site.image("labelled")[1])
    nib.save(nib.Nifti1Image(label, nib.load(served).affine), path)
    body, headers = _form({}, {"label": (path.name, path.read_bytes())})
    assert site.server.request("PUT", f"/datastore/label?image={uid}&tag=final", body, headers)["label"] == uid
    assert uid in {
        Path(i["image"]).name.split(".nii")[0] for i in site.server.request("GET", "/datastore/?output=train")
    }

    status, _, answer = site.pacs.request(f"series/{_orthanc_series_id(site.pacs, uid)}", method="DELETE")
    assert status == 200, answer[:300]
    assert site.pacs.json("dicom-web/series?Modality=SEG"), "the SEG went with its series"
    time.sleep(CACHE_EXPIRY_S + 1)
    status, body = site.get("/datastore/?output=train")
    assert status == 200, body[:500]
    assert uid not in body.decode(), "a SEG of a deleted series is in the training list"
    status, body = site.get(f"/datastore/label?label={uid}&tag=final")
    assert 400 <= status < 500, (status, body[:500])
    _clear(body)
    site.still_serves()


class _Failing(http.server.BaseHTTPRequestHandler):
    def _fail(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = _fail

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def _failing_pacs() -> Iterator[int]:
    """A server on 127.0.0.1 answering HTTP 500 to every request: a PACS that fails (not a DICOMweb mock)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _pacs_failure(site_server, password: str, *expected: str) -> None:
    """Requests that need the PACS: 502/503/504 naming it; ``/info`` and ``/health`` still answered."""
    uid = "1.2.840.99999.1"
    for method, path in [
        ("GET", f"/datastore/image?image={uid}"),
        ("GET", "/datastore/?output=train"),
        ("POST", "/activelearning/first"),
        ("POST", f"/infer/{BTCV}?image={uid}"),
    ]:
        body = b"{}" if path.startswith("/activelearning") else None
        headers = {"Content-Type": "application/json"} if body else {}
        status, _, answer = site_server.raw(method, path, body, headers)
        text = _clear(answer, *expected)
        assert status in (502, 503, 504) and password not in text, (method, path, status, text[:500])
    for path in ("/info/", "/health"):
        assert site_server.raw("GET", path)[0] == 200, path


def test_a_pacs_answering_500(site, tmp_path):
    with _failing_pacs() as port:
        values = {**site.server.values, "pacs_port": str(port)}
        server = DicomwebServer(tmp_path / "monailabel", free_port(), values)
        shutil.copytree(site.server.bundles, server.bundles)
        copy_app(server.app)
        try:
            server.start()
            _pacs_failure(server, site.pacs.auth[1], f"127.0.0.1:{port}", "HTTP 500")
        finally:
            server.stop()
    logs = [server.log, *server.app.glob("logs/*")]
    assert all(site.pacs.auth[1] not in f.read_text(errors="replace") for f in logs if f.is_file())


def test_orthanc_stopped(site):
    """The last test of the module: it stops Orthanc. Even a series already cached is a 502: the guard checks each
    image id against the PACS's list (QIDO-RS)."""
    orthanc_sh("stop", "--storage", str(site.pacs.storage))
    _pacs_failure(site.server, site.pacs.auth[1], f"127.0.0.1:{site.pacs.http_port}", "cannot be reached")
    status, body = site.image("good")
    assert status == 502 and "cannot be reached" in _clear(body), (status, body[:300])


def test_check_image_series_names_the_instance_or_the_gap(tmp_path):
    """``pacs_datastore.check_image_series`` on folders as the server downloads them (Orthanc answers WADO-RS of a CT
    series holding an SR with 404, so the live test above may not reach it), in MONAI Label's environment."""
    folders = {name: tmp_path / name for name in ("good", "gap", "sr")}
    for name in folders:
        files = _ct(tmp_path, name)
        if name == "gap":
            files[2].unlink()
    ds = pydicom.dcmread(folders["sr"] / "CT00001.dcm")
    sr = _sr(folders["sr"] / "sr.dcm", ds.StudyInstanceUID, ds.SeriesInstanceUID)
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from fastapi import HTTPException\n"
        "from pacs_datastore import check_image_series\n"
        "out = {}\n"
        "for f in sys.argv[2:]:\n"
        "    try:\n"
        "        check_image_series(f, '1.2.3'); out[f] = 'ok'\n"
        "    except HTTPException as e:\n"
        "        out[f] = f'{e.status_code} {e.detail}'\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", code, str(REPO / "monailabel_app"), *map(str, folders.values())],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = {Path(k).name: v for k, v in json.loads(done.stdout.splitlines()[-1]).items()}
    assert out["good"] == "ok"
    assert out["gap"].startswith("422 Series 1.2.3: slices") and "missing slice" in out["gap"], out
    instance = pydicom.dcmread(sr).SOPInstanceUID
    assert out["sr"] == f"422 Series 1.2.3: instance {instance} (SR, Basic Text SR Storage) is not an image.", out
