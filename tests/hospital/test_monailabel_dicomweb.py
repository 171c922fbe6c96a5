"""CT through MONAI Label over DICOMweb: the commands of docs/monailabel.md, "Hospital deployment (DICOMweb)", run live.

A local Orthanc (``scripts/orthanc.sh``, no DICOM port) receives the real CT img0001 as a DICOM series
(``python -m shared_networks.cli.to_dicom ct ... --stow_url``); MONAI Label (``scripts/serve_monailabel.sh --studies
<Orthanc's DICOMweb root> --dicomweb_credentials <its credentials>``) serves the BTCV bundle with freshly initialised
quick-size weights on it. Then what a client (3D Slicer) does: infer on the series (its Series Instance UID is the
image id), save the result as the ``final`` label; MONAI Label 0.8.5 stores a label in the PACS on that save, not on
the inference. The DICOM SEG is read back from Orthanc (QIDO-RS, then WADO-RS) and decoded here with pydicom alone
(frame positions against the CT's slices): its segments are named and coloured, it references the CT series, and its
label map is the bundle's own ``inference.yaml`` output on the NIfTI file (>= 99.9 % of voxels, the same grid).
What stays refused on such a server is checked against it live; the guard's own tests are in tests/monailabel.

The documented commands are templates here (:data:`COMMANDS`): the docs show them with :data:`DOC_VALUES`
(``test_the_documented_commands_are_the_tested_ones``), the live test runs them with its own values (the server with
:data:`hospital_helpers.TEST_SERVER_OPTIONS` added: its port, app copy, quick weights). Both servers are always
stopped.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from browser import chromium_missing, page_dom, screenshot
from hospital_helpers import (
    CURL,
    MONAILABEL,
    SHARED_DATA,
    Pacs,
    PacsServer,
    documented_commands,
    multipart_parts,
    own_inference,
    run,
    running_orthanc,
    serving,
)
from live_server import BTCV, LIVE, free_port
from test_monailabel_radiograph import COMMANDS as RADIOGRAPH_COMMANDS
from test_monailabel_radiograph import DOC_VALUES as RADIOGRAPH_DOC_VALUES


def live(test):
    """Slow; skipped without .venv-monailabel (and, by ``running_orthanc``, without Orthanc)."""
    for mark in LIVE:
        test = mark(test)
    return test


CT = SHARED_DATA / "btcv" / "imagesTr" / "img0001.nii.gz"
CT2, LABEL2 = (
    SHARED_DATA / "btcv" / "imagesTr" / "img0002.nii.gz",
    SHARED_DATA / "btcv" / "labelsTr" / "label0002.nii.gz",
)
TRAIN_TIMEOUT_S = 900
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
CURL_LOGIN = 'printf \'user = "%s"\\n\' "$(cat {pacs}/credentials)" | '  # the password through a pipe, not argv

COMMANDS = {
    "orthanc": "bash scripts/orthanc.sh start --storage {pacs} --http_port {pacs_port} --dicom_port 0",
    "push": "{python} -m shared_networks.cli.to_dicom ct {ct} {dicom} --patient_id BTCV-0001 "
    "--stow_url http://127.0.0.1:{pacs_port}/dicom-web --stow_auth {pacs}/credentials",
    "serve": "bash scripts/serve_monailabel.sh --studies http://127.0.0.1:{pacs_port}/dicom-web "
    "--dicomweb_credentials {pacs}/credentials --models btcv_mae_segmentation",
    "infer": f"{CURL} -X POST '{MONAILABEL}/infer/btcv_mae_segmentation?image={{series}}&output=image' -o {{label}}",
    "save": f"{CURL} -X PUT '{MONAILABEL}/datastore/label?image={{series}}&tag=final' -F 'label=@{{label}}' "
    '-F \'params={{"model": "btcv_mae_segmentation"}}\'',
    "qido": CURL_LOGIN + CURL + " -K - 'http://127.0.0.1:{pacs_port}/dicom-web/series?Modality=SEG'",
    "train": f"{CURL} -X POST '{MONAILABEL}/train/btcv_mae_segmentation' -H 'Content-Type: application/json' "
    '-d \'{{"max_epochs": {max_epochs}, "val_split": 0.5}}\'',
    "status": f"{CURL} '{MONAILABEL}/train/'",
    "stop": "bash scripts/orthanc.sh stop --storage {pacs}",
}
DOC_VALUES = {
    "pacs": "~/pacs",
    "pacs_port": "8042",
    "python": ".venv/bin/python",
    "ct": "/data/btcv/imagesTr/img0001.nii.gz",
    "dicom": "~/dicom/img0001",
    "port": "8000",
    "series": "<SeriesInstanceUID>",
    "label": "label.nii.gz",
    "max_epochs": "50",
}


def render(name: str, values: dict[str, str]) -> str:
    return COMMANDS[name].format(**values)


def test_the_documented_commands_are_the_tested_ones():
    """Every command of the docs' hospital section is run by a test: this module's and the radiographs'."""
    documented = documented_commands()
    rendered = [render(name, DOC_VALUES) for name in COMMANDS]
    rendered += [template.format(**RADIOGRAPH_DOC_VALUES) for template in RADIOGRAPH_COMMANDS.values()]
    assert sorted(documented) == sorted(" ".join(c.split()) for c in rendered), "docs/monailabel.md and COMMANDS differ"


class DicomwebServer(PacsServer):
    """The documented ``serve`` command, with the test's port, app copy and bundles folder."""

    def __init__(self, root: Path, port: int, values: dict[str, str]) -> None:
        super().__init__(root, port, values, COMMANDS["serve"], trainers=True)


@dataclass
class Hospital:
    pacs: Pacs
    server: DicomwebServer
    values: dict[str, str]
    study: str
    series: str
    root: Path
    series2: str  # a second CT (img0002), in its own study


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    if not CT.is_file():
        pytest.skip(f"real sample data {CT} is absent (it exists in CI beside the checkout, not in a fresh clone)")
    root = tmp_path_factory.mktemp("dicomweb")
    with running_orthanc(root / "pacs", dicom_port=0) as pacs:  # orthanc.sh start ... --dicom_port 0, then stop
        values = {
            "pacs": str(pacs.storage),
            "pacs_port": str(pacs.http_port),
            "python": sys.executable,
            "ct": str(CT),
            "dicom": str(root / "dicom" / "img0001"),
            "label": str(root / "label.nii.gz"),
        }
        pushed = json.loads(run(render("push", values)))
        series = pushed["series_uid"]
        second = {**values, "ct": str(CT2), "dicom": str(root / "dicom" / "img0002")}  # listed from the start
        series2 = json.loads(run(render("push", second).replace("BTCV-0001", "BTCV-0002")))["series_uid"]
        server = DicomwebServer(root / "monailabel", free_port(), {**values, "series": series})
        with serving(server, [BTCV]):
            values.update(port=str(server.port), series=series, max_epochs="1")
            yield Hospital(pacs, server, values, pushed["study_uid"], series, root, series2)


def _own_inference(image: Path, model: Path, out: Path) -> np.ndarray:
    """The bundle's own inference workflow (quick) on ``image`` with ``model``: its label map."""
    return np.asarray(nib.load(next(own_inference(BTCV, image, model, out).glob("*_seg.nii.gz"))).dataobj)


def _seg_series(pacs: Pacs) -> list[dict]:
    return pacs.json("dicom-web/series?Modality=SEG")


def _retrieve(pacs: Pacs, study: str, series: str) -> list[pydicom.Dataset]:
    status, ctype, body = pacs.request(
        f"dicom-web/studies/{study}/series/{series}", accept='multipart/related; type="application/dicom"'
    )
    assert status == 200, (status, body[:300])
    return [pydicom.dcmread(io.BytesIO(part)) for part in multipart_parts(body, ctype)]


def _decode_seg(seg: pydicom.Dataset, affine_ras: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The SEG's label map on the NIfTI grid (I, J, K) of the CT (frames placed by their Image Position (Patient));
    asserts the SEG's plane, spacing and frame positions are the CT's."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras  # voxel (i, j, k) -> LPS mm
    to_voxel = np.linalg.inv(lps)
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    spacing = np.array(shared.PixelMeasuresSequence[0].PixelSpacing, dtype=float)  # between rows, between columns
    axes = lps[:3, :3] / np.linalg.norm(lps[:3, :3], axis=0)
    np.testing.assert_allclose(orientation, np.concatenate([axes[:, 0], axes[:, 1]]), atol=1e-4)
    np.testing.assert_allclose(spacing, np.linalg.norm(lps[:3, :3], axis=0)[[1, 0]], atol=1e-3)
    assert (seg.Rows, seg.Columns) == (shape[1], shape[0])
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    labels = np.zeros(shape, dtype=np.uint16)
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        position = np.array([*group.PlanePositionSequence[0].ImagePositionPatient, 1.0], dtype=float)
        i, j, k = (to_voxel @ position)[:3]
        assert abs(i) < 1e-2 and abs(j) < 1e-2 and abs(k - round(k)) < 1e-2, f"frame off the CT's grid: {i, j, k}"
        plane = labels[:, :, int(round(k))]
        on = frame.T.astype(bool)  # (rows J, columns I) -> (I, J)
        assert not np.any(plane[on]), "two segments on one voxel"
        plane[on] = number
    return labels


@live
def test_infer_then_save_stores_a_dicom_seg_in_the_pacs(hospital, tmp_path):
    h = hospital
    labels = h.server.info["models"][BTCV]["labels"]  # name -> value
    assert len(labels) == 13
    # the series a client is handed (3D Slicer's "Next Sample"): the PACS's one CT series, by its UID
    assert h.server.request("POST", "/activelearning/first", {})["id"] in (h.series, h.series2)
    # the client's two calls, as documented: infer on the series, save the result as the final label
    run(render("infer", h.values))
    served = nib.load(h.values["label"])
    assert _seg_series(h.pacs) == []  # MONAI Label stores nothing in the PACS on an inference
    saved = json.loads(run(render("save", h.values)))
    assert saved == {"image": h.series, "label": h.series}
    found = json.loads(run(render("qido", h.values)))
    assert len(found) == 1, found
    seg_uid = pydicom.Dataset.from_json(found[0]).SeriesInstanceUID
    info = h.server.request("GET", f"/datastore/label/info?label={h.series}&tag=final")
    assert info["SeriesInstanceUID"] == seg_uid and info["Modality"] == "SEG"
    # what training through the server reads: the PACS's SEGs as the labels of their series
    (item,) = h.server.request("GET", "/datastore/?output=train")
    assert (Path(item["image"]).name, Path(item["label"]).name) == (f"{h.series}.nii.gz",) * 2

    (seg,) = _retrieve(h.pacs, h.study, seg_uid)
    assert seg.SOPClassUID == SEG_SOP_CLASS and seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == h.study and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == h.series
    ct = _retrieve(h.pacs, h.study, h.series)
    assert seg.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced <= {c.SOPInstanceUID for c in ct} and referenced

    # the label map: the bundle's own inference on the NIfTI file, on the same grid
    src = nib.load(CT)
    own = _own_inference(CT, h.server.bundles / BTCV / "models" / "model.pt", tmp_path / "own")
    decoded = _decode_seg(seg, src.affine, src.shape)
    assert decoded.shape == own.shape == served.shape
    present = sorted(int(v) for v in np.unique(own) if v)
    assert len(present) >= 2, "a near-constant map: the agreement below would mean little"
    agreement = float(np.mean(decoded == own))
    print(f"SEG vs the bundle's own inference: {agreement:.6f} of {own.size} voxels equal; {len(present)} labels")
    assert agreement >= 0.999
    np.testing.assert_array_equal(decoded, np.asarray(served.dataobj))  # the SEG holds what was saved, exactly

    # one segment per label present, named by the model and coloured
    names = {v: k for k, v in labels.items()}
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert sorted(segments) == sorted(int(v) for v in np.unique(decoded) if v)
    for number, s in segments.items():
        assert s.SegmentLabel == names[number] and s.SegmentAlgorithmType == "SEMIAUTOMATIC"
        assert s.SegmentAlgorithmName == BTCV and len(s.RecommendedDisplayCIELabValue) == 3
    colours = {tuple(s.RecommendedDisplayCIELabValue) for s in segments.values()}
    assert len(colours) >= len(segments) - 3  # left and right organs share a colour
    codes = {s.SegmentLabel: s.SegmentedPropertyTypeCodeSequence[0] for s in segments.values()}
    if "spleen" in codes:
        assert (codes["spleen"].CodingSchemeDesignator, codes["spleen"].CodeValue) == ("SCT", "78961009")
    if "portal and splenic vein" in codes:
        assert codes["portal and splenic vein"].CodingSchemeDesignator == "99MAE"
    right = [s for s in segments.values() if s.SegmentLabel == "right kidney"]
    if right:
        assert right[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "24028007"  # SCT Right


def _save_as_slicer(h: Hospital, label: np.ndarray, label_info: list[dict], path: Path) -> pydicom.Dataset:
    """Save ``label`` as the final label with ``label_info`` as 3D Slicer does; the SEG it stored in the PACS."""
    nib.save(nib.Nifti1Image(label, nib.load(CT).affine), path)
    body, headers = _form({"params": json.dumps({"label_info": label_info})}, {"label": (path.name, path.read_bytes())})
    assert h.server.request("PUT", f"/datastore/label?image={h.series}&tag=final", body, headers)["label"] == h.series
    info = h.server.request("GET", f"/datastore/label/info?label={h.series}&tag=final")
    (seg,) = _retrieve(h.pacs, h.study, info["SeriesInstanceUID"])
    return seg


@live
def test_slicer_label_info_names_segments_by_value(hospital, tmp_path):
    """3D Slicer names segments ``{"name", "idx"}``: a map with the 13 BTCV organs gives 13 named, coloured segments;
    names follow the values even when a value is absent (MONAI Label 0.8.5 counts them by position)."""
    h = hospital
    ct = nib.load(CT)
    labels = h.server.info["models"][BTCV]["labels"]
    slicer = [{"name": name, "idx": value} for name, value in sorted(labels.items(), key=lambda kv: kv[1])]
    organs = np.zeros(ct.shape, dtype=np.uint8)
    for value in range(1, 14):  # a block per organ along i
        organs[(value - 1) * 9 : value * 9 - 1, 10:50, 5:25] = value
    seg = _save_as_slicer(h, organs, slicer, tmp_path / "organs.nii.gz")
    assert [(int(s.SegmentNumber), s.SegmentLabel) for s in seg.SegmentSequence] == [
        (e["idx"], e["name"]) for e in slicer
    ]
    assert len({tuple(s.RecommendedDisplayCIELabValue) for s in seg.SegmentSequence}) >= 10  # left/right share
    np.testing.assert_array_equal(_decode_seg(seg, ct.affine, ct.shape), organs)

    label = np.zeros(ct.shape, dtype=np.uint8)
    label[10:20, 10:20, 5:10] = 3
    label[30:40, 30:40, 12:18] = 7
    named = [{"name": f"organ {v}", "idx": v} for v in range(1, 9)]
    named[6]["color"] = [10, 200, 30]
    seg = _save_as_slicer(h, label, named, tmp_path / "edited.nii.gz")
    assert [(int(s.SegmentNumber), s.SegmentLabel) for s in seg.SegmentSequence] == [(3, "organ 3"), (7, "organ 7")]
    assert [s.SegmentAlgorithmName for s in seg.SegmentSequence] == ["MONAI Label"] * 2
    np.testing.assert_array_equal(_decode_seg(seg, ct.affine, ct.shape), label)

    # a label off the image's grid is refused (422), nothing reaches the PACS
    path = tmp_path / "shifted.nii.gz"
    before = len(_seg_series(h.pacs))
    shifted = ct.affine.copy()
    shifted[:3, 3] += 5.0
    nib.save(nib.Nifti1Image(label, shifted), path)
    body, headers = _form({}, {"label": (path.name, path.read_bytes())})
    status, _, answer = h.server.raw("PUT", f"/datastore/label?image={h.series}&tag=final", body, headers)
    assert status == 422 and b"grid" in answer, answer[:300]
    assert len(_seg_series(h.pacs)) == before


def _form(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict]:
    boundary = os.urandom(8).hex()
    body = b""
    for k, v in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    for k, (filename, data) in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{filename}"\r\n\r\n'
        body += head.encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@live
def test_what_stays_refused_on_a_pacs_server(hospital):
    h = hospital
    q = urllib.parse.quote
    for bad in ["img0001", "../" + h.series, h.series + "/../../etc/passwd", "1..2", "1" * 65, "%2e%2e%2f"]:
        for method, path in [
            ("POST", f"/infer/{BTCV}?image={q(bad, safe='')}"),
            ("GET", f"/datastore/image?image={q(bad, safe='')}"),
            ("GET", f"/datastore/label?label={q(bad, safe='')}&tag=final"),
        ]:
            status, _, answer = h.server.raw(method, path)
            assert status == 422 and b"Series Instance UID" in answer, (bad, method, path, status, answer[:200])
    assert h.server.raw("POST", f"/infer/{BTCV}?image=1.2.3.4")[0] == 404  # a UID the PACS does not have
    # no dcmqi here: MONAI Label's output=dicom_seg would fail (500); the label is saved as a SEG instead
    status, _, answer = h.server.raw("POST", f"/infer/{BTCV}?image={h.series}&output=dicom_seg")
    assert status == 422 and b"itkimage2segimage" in answer
    # images are the PACS's: not uploaded or deleted here
    body, headers = _form({}, {"file": ("1.2.3.nii.gz", CT.read_bytes())})
    assert h.server.raw("PUT", "/datastore/image?image=1.2.3", body, headers)[0] == 403
    assert h.server.raw("DELETE", f"/datastore/image?id={h.series}")[0] == 403
    # the DICOMweb proxy reads, and only what a viewer reads: no STOW, no delete, no other PACS path
    for method in ("POST", "PUT", "DELETE"):
        for path in ("dicom/qido/studies", "dicom/wado/../../tools/execute-script", "dicom/stow/studies"):
            assert h.server.raw(method, f"/proxy/{path}")[0] == 403, (method, path)
    for path in ("dicom/wado/../../tools/execute-script", "dicom/stow/studies", "dicom/qido/instances", "other/x"):
        assert h.server.raw("GET", f"/proxy/{path}")[0] in (403, 404), path
    assert h.server.raw("GET", f"/proxy/dicom/wado/studies/{h.study}")[0] == 404  # a whole study: not a viewer's read
    # segments described by MONAI Label's template syntax are refused
    params = json.dumps({"label_info": [{"name": "x", "segmentAttribute": {"SegmentLabel": "y"}}]})
    body, headers = _form({"params": params}, {"label": ("l.nii.gz", CT.read_bytes())})
    assert h.server.raw("PUT", f"/datastore/label?image={h.series}&tag=final", body, headers)[0] == 422
    # the PACS password is in no process's command line or environment, nor in the server's log
    password = h.pacs.auth[1]
    group = os.getpgid(h.server.process.pid)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != group:
                continue
            seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
        assert password.encode() not in seen, f"the PACS password is visible in process {proc.name}"
    logs = [h.server.log, *h.server.app.glob("logs/*")]
    assert all(password not in f.read_text(errors="replace") for f in logs if f.is_file())


PROXY_FRAME = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@live
def test_the_viewer_reads_the_pacs_through_the_guard(hospital, tmp_path):
    """MONAI Label's OHIF page (``/ohif/``) reads the PACS through ``/proxy/dicom/{qido,wado}/...``, answered by the
    guard (``monailabel_app/dicomweb_proxy.py``) with the server's login: the browser needs none, and no answer names
    the PACS. Then the page itself, in headless Chromium: the study list shows the CT study, and the viewer draws the
    CT series and lists the SEG stored by the earlier test."""
    h = hospital
    pacs_address = f"127.0.0.1:{h.pacs.http_port}".encode()
    query = "limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060"
    status, headers, body = h.server.raw("GET", f"/proxy/dicom/qido/studies?{query}")
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff", body[:300]
    studies = [pydicom.Dataset.from_json(s) for s in json.loads(body)]
    assert h.study in {s.StudyInstanceUID for s in studies} and pacs_address not in body
    status, _, body = h.server.raw("GET", f"/proxy/dicom/wado/studies/{h.study}/series/{h.series}/metadata")
    assert status == 200 and pacs_address not in body
    instances = [pydicom.Dataset.from_json(i, bulk_data_uri_handler=lambda *a: b"") for i in json.loads(body)]
    assert len(instances) == nib.load(CT).shape[2]  # one per slice
    uris = re.findall(rb'"BulkDataURI"\s*:\s*"([^"]+)"', body)  # the pixel data of each instance
    assert len(uris) >= len(instances) and all(uri.startswith(b"/proxy/dicom/wado/studies/") for uri in uris)
    first = instances[0]
    frame = f"studies/{h.study}/series/{h.series}/instances/{first.SOPInstanceUID}/frames/1"
    status, headers, body = h.server.raw("GET", f"/proxy/dicom/wado/{frame}", headers={"Accept": PROXY_FRAME})
    assert status == 200
    (pixels,) = multipart_parts(body, headers["Content-Type"])
    assert len(pixels) == first.Rows * first.Columns * first.BitsAllocated // 8
    _, ctype, direct = h.pacs.request(f"dicom-web/{frame}", accept=PROXY_FRAME)
    assert multipart_parts(direct, ctype) == [pixels]  # the PACS's own frame, byte for byte
    assert h.server.raw("POST", "/proxy/dicom/stow/studies", b"x", {"Content-Type": "application/dicom"})[0] == 403

    if missing := chromium_missing():
        pytest.skip(missing)
    profile = tmp_path / "profile"
    assert "BTCV-0001" in page_dom(f"{h.server.url}/ohif/", profile)  # the study list, from QIDO-RS
    viewer = f"{h.server.url}/ohif/viewer?StudyInstanceUIDs={h.study}"
    dom = page_dom(viewer, profile)
    assert ">img0001<" in dom and ">SEG<" in dom  # the CT series (its description) and the SEG beside it
    shown = screenshot(viewer, tmp_path / "viewer.png", profile)
    blank = screenshot(f"{h.server.url}/ohif/viewer?StudyInstanceUIDs=1.2.3", tmp_path / "blank.png", profile)

    def viewport(pixels: np.ndarray) -> np.ndarray:  # the middle of the viewport, in grey
        rows, cols = pixels.shape[:2]
        return pixels[int(0.2 * rows) : int(0.8 * rows), int(0.35 * cols) : int(0.85 * cols)].mean(axis=2)

    drawn, empty = viewport(shown), viewport(blank)
    print(f"viewport grey: CT {drawn.mean():.1f} (>60 on {np.mean(drawn > 60):.2f}), no study {empty.mean():.1f}")
    assert drawn.mean() > 40 and np.mean(drawn > 60) > 0.5 and drawn.std() > 10  # the CT's body, in grey levels
    assert empty.mean() < 10  # without a study the viewport stays black: the check above can fail


@live
def test_a_training_round_on_the_segs_of_the_pacs(hospital):
    """Labels that reached MONAI Label as DICOM SEGs in the PACS train the bundle through the server: the second CT's
    ground truth saved as its final label (a SEG in Orthanc), the first CT's label from the tests above, then the
    documented train command; one epoch, one CT trains and one validates, and the weights served are replaced."""
    h = hospital
    if not h.server.request("GET", "/datastore/?output=train"):  # run alone: the first CT gets its label first
        run(render("infer", h.values))
        run(render("save", h.values))
    saved = json.loads(run(render("save", {**h.values, "series": h.series2, "label": str(LABEL2)})))
    assert saved == {"image": h.series2, "label": h.series2}
    assert len(_seg_series(h.pacs)) >= 2
    items = h.server.request("GET", "/datastore/?output=train")
    assert sorted(Path(i["label"]).name for i in items) == sorted(f"{s}.nii.gz" for s in (h.series, h.series2))
    model_pt = h.server.bundles / BTCV / "models" / "model.pt"
    written = model_pt.stat().st_mtime_ns
    assert json.loads(run(render("train", h.values)))["status"] in ("SUBMITTED", "RUNNING")
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while (task := json.loads(run(render("status", h.values))))["status"] in ("SUBMITTED", "RUNNING"):
        assert time.monotonic() < deadline, f"training still running after {TRAIN_TIMEOUT_S} s:\n{h.server.log_tail()}"
        time.sleep(2)
    assert task["status"] == "DONE", f"training ended as {task['status']}:\n{h.server.log_tail()}"
    log = h.server.log.read_text(errors="replace")
    assert "Epoch: 1/1, Iter: 1/1" in log  # one CT trained, the other validated
    assert re.search(r"Epoch\[1\] Metrics -- (val_\w+: \S+ )*val_mean_dice: \d", log)
    assert model_pt.stat().st_mtime_ns > written  # the run's model is the one served now


@live
def test_the_series_are_cached_in_the_private_folder_removed_on_stop(hospital):
    """The series MONAI Label downloads are cached in the server's private temporary folder only, which goes when the
    server stops (the last test of this module: it stops the server)."""
    h = hospital
    private = [p for p in h.server.tmpdir.iterdir() if p.name.startswith("mae-monailabel.")]
    assert len(private) == 1
    cached = {p.parent.name for p in (private[0] / "dicomweb").rglob("*.dcm")}
    assert h.series in cached, "the CT series is not cached where the script said"
    default_cache = Path.home() / ".cache" / "monailabel" / "dicom"  # MONAI Label's default
    assert not any(h.series in str(p) for p in default_cache.rglob("*"))
    h.server.stop()
    assert not private[0].exists(), "the private folder (and the cached series) outlived the server"
