"""Chest radiographs through MONAI Label over DICOMweb: the commands of docs/monailabel.md, "Hospital deployment
(DICOMweb)", "Chest radiographs", run live.

A local Orthanc (``scripts/orthanc.sh``, no DICOM port) receives real ChestX-ray14 PNGs written as DICOM: a DX in
MONOCHROME1 (``python -m shared_networks.cli.to_dicom radiograph ... --photometric MONOCHROME1 --stow_url``, as
documented) and a CR with a VOI LUT Sequence (``write_radiograph``); besides them, broken radiographs (one without pixel
data, a series of two radiographs) and a small CT series. MONAI Label serves the classifier alone with the documented
command (``scripts/serve_monailabel.sh --studies <Orthanc's DICOMweb root> ... --models cxr14_mae_classification``)
on freshly initialised quick-size weights: it lists the DX and CR series, not the CT one, and ``/infer`` on a series
answers the 14 finding probabilities, equal (within 1e-4) to the bundle's own ``configs/inference.yaml`` on the same
DICOM file. The broken ones are a 422 naming the series. A second server given ``--modalities CT,DX,CR`` with the BTCV
bundle too checks that each model refuses the other's series (422). Both servers and Orthanc are always stopped.
"""

from __future__ import annotations

import csv
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hospital_helpers import (
    CURL,
    MONAILABEL,
    SHARED_DATA,
    Pacs,
    PacsServer,
    own_inference,
    run,
    running_orthanc,
    serving,
)
from live_server import BTCV, CXR, CXR_IMAGE, LIVE, free_port

from shared_networks.data.cxr14 import CXR14_FINDINGS
from shared_networks.dicom import stow_rs, write_ct_series, write_radiograph

pytestmark = LIVE
IMAGES = SHARED_DATA / "chestxray14" / "images"
SECOND_IMAGE = "00000550_000"  # another real radiograph, for the VOI LUT one
TOLERANCE = 1e-4

COMMANDS = {
    "push": "{python} -m shared_networks.cli.to_dicom radiograph {png} {dcm} --patient_id CXR-0001 "
    "--photometric MONOCHROME1 --stow_url http://127.0.0.1:{pacs_port}/dicom-web --stow_auth {pacs}/credentials",
    "serve": "bash scripts/serve_monailabel.sh --studies http://127.0.0.1:{pacs_port}/dicom-web "
    "--dicomweb_credentials {pacs}/credentials --models cxr14_mae_classification",
    "infer": f"{CURL} -X POST '{MONAILABEL}/infer/cxr14_mae_classification?image={{series}}'",
}
DOC_VALUES = {
    "pacs": "~/pacs",
    "pacs_port": "8042",
    "python": ".venv/bin/python",
    "png": f"/data/chestxray14/images/{CXR_IMAGE}.png",
    "dcm": f"~/dicom/{CXR_IMAGE}.dcm",
    "port": "8000",
    "series": "<SeriesInstanceUID>",
}


@dataclass
class Site:
    pacs: Pacs
    server: PacsServer
    values: dict[str, str]
    files: dict[str, Path]  # name -> the DICOM file stored in the PACS (the first one of a series)
    series: dict[str, str]  # name -> Series Instance UID
    root: Path


def _series_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def _write_others(root: Path, pacs: Pacs) -> dict[str, Path]:
    """STOWed to ``pacs``: a CR with a VOI LUT (MONOCHROME2), a DX without pixel data, a series of two DX, a CT."""
    root.mkdir()
    png = IMAGES / f"{SECOND_IMAGE}.png"
    lut = np.clip((np.arange(256) - 40) * 400, 0, 65535).astype(np.uint16)  # a steep curve: not the PNG's picture
    files = {
        "voi_lut": write_radiograph(png, root / "voi_lut.dcm", patient_id="CXR-0002", modality="CR", voi_lut=lut),
        "no_pixels": write_radiograph(png, root / "no_pixels.dcm", patient_id="CXR-0003"),
        "two_views": write_radiograph(png, root / "pa.dcm", patient_id="CXR-0004", view_position="PA"),
    }
    ds = pydicom.dcmread(files["no_pixels"])
    del ds.PixelData
    ds.save_as(files["no_pixels"])
    lateral = write_radiograph(
        IMAGES / f"{CXR_IMAGE}.png",
        root / "ll.dcm",
        patient_id="CXR-0004",
        view_position="LL",
        study_uid=str(pydicom.dcmread(files["two_views"]).StudyInstanceUID),
        series_uid=_series_uid(files["two_views"]),
        series_number=1,
    )
    nifti = root / "ct.nii.gz"
    volume = (np.arange(16 * 16 * 4).reshape(16, 16, 4) % 200 - 100).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.5, 1.0])), nifti)
    ct = write_ct_series(nifti, root / "ct", patient_id="CT-0001")
    stow_rs(pacs.dicomweb, [*files.values(), lateral, *ct], auth=pacs.auth)
    return {**files, "ct": ct[0]}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not IMAGES.is_dir():
        pytest.skip(f"real sample data {IMAGES} is absent (it exists in CI beside the checkout, not in a fresh clone)")
    root = tmp_path_factory.mktemp("radiographs")
    with running_orthanc(root / "pacs", dicom_port=0) as pacs:
        values = {
            "pacs": str(pacs.storage),
            "pacs_port": str(pacs.http_port),
            "python": sys.executable,
            "png": str(IMAGES / f"{CXR_IMAGE}.png"),
            "dcm": str(root / "dicom" / f"{CXR_IMAGE}.dcm"),
        }
        (root / "dicom").mkdir()
        pushed = json.loads(run(COMMANDS["push"].format(**values)))
        files = {"monochrome1": Path(values["dcm"]), **_write_others(root / "others", pacs)}
        series = {name: _series_uid(path) for name, path in files.items()}
        assert series["monochrome1"] == pushed["series_uid"]
        server = PacsServer(root / "monailabel", free_port(), values, COMMANDS["serve"])
        with serving(server, [CXR]):
            values["port"] = str(server.port)
            yield Site(pacs, server, values, files, series, root)


def _own_scores(image: Path, model: Path, out: Path) -> np.ndarray:
    """The bundle's own inference workflow (quick) on ``image`` with ``model``: the 14 probabilities."""
    with open(own_inference(CXR, image, model, out) / "probabilities.csv") as f:
        (row,) = list(csv.DictReader(f))
    return np.array([float(row[name]) for name in CXR14_FINDINGS])


def _served_scores(answer: dict) -> np.ndarray:
    prediction = answer["prediction"]
    assert [(p["idx"], p["label"]) for p in prediction] == list(enumerate(CXR14_FINDINGS))
    return np.array([p["score"] for p in prediction])


def test_the_classifier_lists_the_radiographs_only(site):
    """The served bundle takes DX and CR: the server lists those series (two QIDO-RS searches), not the CT."""
    status = site.server.request("GET", "/info/")["datastore"]
    assert status["total"] == 4, status  # monochrome1 (DX), voi_lut (CR), no_pixels and two_views (DX)
    status, _, answer = site.server.raw("POST", f"/infer/{CXR}?image={site.series['ct']}")
    assert status == 404 and site.series["ct"].encode() in answer, (status, answer[:300])


def test_infer_answers_the_bundles_own_scores(site, tmp_path):
    model = site.server.bundles / CXR / "models" / "model.pt"
    png = _own_scores(IMAGES / f"{CXR_IMAGE}.png", model, tmp_path / "png")
    assert np.ptp(png) > 0.05  # the classes differ: the comparisons below mean something
    own = {}
    for name in ("monochrome1", "voi_lut"):
        values = {**site.values, "series": site.series[name]}
        served = _served_scores(json.loads(run(COMMANDS["infer"].format(**values))))  # as documented
        own[name] = _own_scores(site.files[name], model, tmp_path / name)
        print(f"{name}: served - bundle's own, at most {np.abs(served - own[name]).max():.2e}")
        np.testing.assert_allclose(served, own[name], atol=TOLERANCE)
    # the display pipeline is the bundle's: MONOCHROME1 with the full-range window is the PNG's picture (inverted
    # back); the VOI LUT is applied (its picture is not its PNG's)
    np.testing.assert_allclose(own["monochrome1"], png, atol=TOLERANCE)
    second_png = _own_scores(IMAGES / f"{SECOND_IMAGE}.png", model, tmp_path / "png2")
    assert np.abs(own["voi_lut"] - second_png).max() > 1e-3, (own["voi_lut"], second_png)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("no_pixels", "without pixel data"), ("two_views", "holds 2 radiographs")],
)
def test_a_broken_radiograph_series_is_refused_naming_it(site, name, expected):
    uid = site.series[name]
    for method, path in [("POST", f"/infer/{CXR}?image={uid}"), ("GET", f"/datastore/image?image={uid}")]:
        status, _, answer = site.server.raw(method, path)
        text = answer.decode(errors="replace")
        assert status == 422 and uid in text and expected in text, (method, status, text[:500])
        assert "Traceback" not in text and str(site.root) not in text, text[:500]
    # the server goes on
    assert site.server.raw("POST", f"/infer/{CXR}?image={site.series['monochrome1']}")[0] == 200


def test_the_served_image_of_a_radiograph_series_is_its_dicom_file(site, tmp_path):
    status, _, body = site.server.raw("GET", f"/datastore/image?image={site.series['voi_lut']}")
    assert status == 200, body[:300]
    path = tmp_path / "served.dcm"
    path.write_bytes(body)
    served, stored = pydicom.dcmread(path), pydicom.dcmread(site.files["voi_lut"])
    assert served.SOPInstanceUID == stored.SOPInstanceUID and served.Modality == "CR"
    np.testing.assert_array_equal(served.pixel_array, stored.pixel_array)
    assert "VOILUTSequence" in served


def test_each_model_refuses_the_others_series(site, tmp_path):
    """``--modalities CT,DX,CR`` with both bundles served: the classifier refuses a CT series, the segmentation bundle
    a radiograph, each a 422 naming the series."""
    command = COMMANDS["serve"].replace("--models cxr14_mae_classification", f"--models {BTCV},{CXR}")
    server = PacsServer(tmp_path / "both", free_port(), site.values, command, "--modalities", "CT,DX,CR")
    assert "--modalities" in shlex.join(server.command())
    with serving(server, [BTCV, CXR]):
        assert server.request("GET", "/info/")["datastore"]["total"] == 5  # the CT series too
        for model, name, expected in [(CXR, "ct", "is CT"), (BTCV, "monochrome1", "is DX")]:
            uid = site.series[name]
            status, _, answer = server.raw("POST", f"/infer/{model}?image={uid}")
            text = answer.decode(errors="replace")
            assert status == 422 and uid in text and expected in text, (model, status, text[:500])
        assert server.raw("POST", f"/infer/{CXR}?image={site.series['voi_lut']}")[0] == 200
