"""The three bundles served by a real MONAI Label server (scripts/serve_monailabel.sh, .venv-monailabel) on 127.0.0.1.

The server runs on a studies folder of real samples from ../shared/data (two BTCV CTs, the MSD Task01 4-D MRI, one
chest X-ray) with freshly initialised quick-size networks saved as each bundle's models/model.pt (and models/mae.pt
for the segmentation bundles, as after the bundle's own pre-training; a training run per bundle would add minutes and
test nothing more here: what is checked is that MONAI Label's stock bundle tasks run each bundle's own pipeline). The
app serves them with ``--configs quick``, from copies whose configs have configs/quick.yaml baked in. Each answer is
checked against the bundle's own inference workflow run in this process on the same file with the same weights; then
one BTCV training epoch runs through MONAI Label on labels saved in its datastore, and the trained weights are served.
"""

from __future__ import annotations

import csv
import json
import locale
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_configs import BundleConfigs
from bundle_weights import write_quick_weights

from shared_networks.data.cxr14 import CXR14_FINDINGS

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
VENV = Path(os.environ.get("MONAILABEL_VENV", REPO / ".venv-monailabel"))
BTCV, BRATS, CXR = "btcv_mae_segmentation", "brats_mae_segmentation", "cxr14_mae_classification"
CXR_IMAGE = "00000211_000"  # a grey 256 x 256 radiograph
STARTUP_TIMEOUT_S = 240
TRAIN_TIMEOUT_S = 600


def _monailabel_installed() -> bool:
    return (VENV / "bin" / "python").exists() and any(VENV.glob("lib/python3*/site-packages/monailabel/__init__.py"))


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not _monailabel_installed(),
        reason=f"MONAI Label is not installed in {VENV}: run `bash scripts/setup_monailabel.sh` (CI does)",
    ),
]


class Server:
    """A MONAI Label server process and its folders; HTTP helpers return decoded bodies."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.url = f"http://127.0.0.1:{port}"
        self.studies, self.bundles, self.app = root / "studies", root / "bundles", root / "app"
        self.log = root / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [
            "bash", str(REPO / "scripts" / "serve_monailabel.sh"), "--studies", str(self.studies),
            "--port", str(self.port), "--app", str(self.app), "--bundles", str(self.bundles), "--configs", "quick",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"MONAI Label exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.info = self.request("GET", "/info/")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        pytest.fail(f"MONAI Label did not answer within {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the server and any training process it started
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def request(self, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None) -> object:
        headers = dict(headers or {})
        if isinstance(body, dict):
            body, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                data = r.read()
                return json.loads(data) if r.headers.get_content_type() == "application/json" else data
        except urllib.error.HTTPError as e:
            pytest.fail(f"{method} {path}: HTTP {e.code} {e.read()[:500]!r}\n{self.log_tail()}")

    def raw(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """``(status, headers, body)`` of a request, whatever its status."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def put_file(self, path: str, field: str, file: Path) -> object:
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{file.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + file.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return self.request("PUT", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_weights(bundle: Path, name: str) -> None:
    """A freshly initialised quick-size network as ``bundle/models/model.pt``."""
    torch.manual_seed(0)
    network = BundleConfigs(name).parser("inference").get_parsed_content("network_def")
    if name == CXR:
        torch.nn.init.normal_(network.head.weight, std=0.5)  # probabilities that differ from 0.5 and between classes
    (bundle / "models").mkdir(parents=True)
    torch.save(network.state_dict(), bundle / "models" / "model.pt")


@pytest.fixture(scope="module", autouse=True)
def utf8_locale():
    """Reads the bundle configs as UTF-8 (the BraTS ones hold non-ASCII characters), as a fresh process does.

    MONAI opens config files with the locale's encoding; in a full test run an earlier test leaves the process's
    LC_CTYPE at an ASCII locale, and reading configs/inference.yaml then fails. The locale is restored afterwards.
    """
    saved = locale.setlocale(locale.LC_CTYPE)
    if locale.getpreferredencoding(False).upper().replace("-", "") != "UTF8":
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
    yield
    locale.setlocale(locale.LC_CTYPE, saved)


@pytest.fixture(scope="module")
def server(tmp_path_factory, utf8_locale) -> Server:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real sample data {SHARED_DATA} is absent (it exists in CI beside the checkout, not in a fresh clone)"
        )
    srv = Server(tmp_path_factory.mktemp("monailabel"), _free_port())
    srv.studies.mkdir()
    for f in [
        SHARED_DATA / "btcv" / "imagesTr" / "img0001.nii.gz",
        SHARED_DATA / "btcv" / "imagesTr" / "img0002.nii.gz",
        SHARED_DATA / "Task01_BrainTumour" / "imagesTr" / "BRATS_001.nii.gz",
        SHARED_DATA / "chestxray14" / "images" / f"{CXR_IMAGE}.png",
    ]:
        shutil.copy(f, srv.studies)
    for name in (BTCV, BRATS, CXR):
        shutil.copytree(REPO / "bundles" / name / "configs", srv.bundles / name / "configs")
        _fresh_weights(srv.bundles / name, name)
        if name != CXR:  # the fine-tuning config's MAE encoder (the fine-tuned model.pt loads over it)
            write_quick_weights(srv.bundles / name, ("mae.pt",))
    # a copy of the app: the server writes logs/ and model/ into its app folder
    ignore = shutil.ignore_patterns("__pycache__", "logs", "model", "bin")
    shutil.copytree(REPO / "monailabel_app", srv.app, ignore=ignore)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def _bundle_inference(name: str, image: Path, model: Path, out: Path) -> Path:
    """The bundle's own inference workflow (quick) on ``image`` with ``model``; returns its output folder."""
    wf = BundleConfigs(name).workflow(
        "inference", "inference", dataset_dir=str(image), model_path=str(model), output_dir=str(out)
    )
    wf.run()
    wf.finalize()
    return out


def _infer_label_map(server: Server, model: str, image: str, tmp_path: Path) -> nib.Nifti1Image:
    data = server.request("POST", f"/infer/{model}?image={image}&output=image")
    assert isinstance(data, bytes) and data[:2] == b"\x1f\x8b", f"{model}: expected a gzipped NIfTI, got {data[:200]!r}"
    path = tmp_path / f"{model}_{image}.nii.gz"
    path.write_bytes(data)
    return nib.load(path)


def test_serves_the_three_bundles(server):
    for name in (BTCV, BRATS, CXR):  # from copies with configs/quick.yaml baked in, on the bundle's own weights
        served = server.app / "model" / "baked-quick" / name
        assert (served / "configs" / "inference.yaml").read_text().startswith("# baked: configs/quick.yaml")
        assert (served / "models").resolve() == (server.bundles / name / "models").resolve()
    models = server.info["models"]
    assert set(models) == {BTCV, BRATS, CXR}
    assert set(server.info["trainers"]) == {BTCV, BRATS}
    assert models[BTCV]["type"] == "segmentation" and models[BTCV]["dimension"] == 3
    assert models[BTCV]["labels"]["spleen"] == 1 and models[BTCV]["labels"]["left adrenal gland"] == 13
    assert models[BRATS]["labels"] == {"edema": 1, "non-enhancing tumour": 2, "enhancing tumour": 3}
    assert models[CXR]["type"] == "classification" and models[CXR]["dimension"] == 2
    assert models[CXR]["labels"] == {f: i for i, f in enumerate(CXR14_FINDINGS)}


@pytest.mark.parametrize(
    ("model", "image", "values"),
    [(BTCV, "img0001", set(range(14))), (BRATS, "BRATS_001", {0, 1, 2, 3})],
)
def test_segmentation_label_map_in_the_image_geometry(server, tmp_path, model, image, values):
    seg = _infer_label_map(server, model, image, tmp_path)
    src = nib.load(server.studies / f"{image}.nii.gz")
    assert seg.shape == src.shape[:3]  # BraTS: the 4 modalities of a 4-D file -> one label map
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
    labels = np.asarray(seg.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) <= values

    # the same map as the bundle's own inference workflow on the same file with the same weights
    out = _bundle_inference(model, server.studies / f"{image}.nii.gz", server.bundles / model / "models" / "model.pt",
                            tmp_path / "bundle")  # fmt: skip
    own = np.asarray(nib.load(next(out.glob("*_seg.nii.gz"))).dataobj)
    assert own.shape == labels.shape
    assert len(np.unique(own)) > 1  # not a constant map: the agreement below means something
    assert np.mean(own == labels) > 0.999


def test_classification_returns_the_14_probabilities(server, tmp_path):
    result = server.request("POST", f"/infer/{CXR}?image={CXR_IMAGE}&output=json")
    prediction = result["prediction"]
    assert [(p["idx"], p["label"]) for p in prediction] == list(enumerate(CXR14_FINDINGS))
    scores = np.array([p["score"] for p in prediction])
    assert np.all((scores >= 0) & (scores <= 1))

    out = _bundle_inference(CXR, server.studies / f"{CXR_IMAGE}.png", server.bundles / CXR / "models" / "model.pt",
                            tmp_path / "bundle")  # fmt: skip
    with open(out / "probabilities.csv") as f:
        (row,) = list(csv.DictReader(f))
    own = np.array([float(row[name]) for name in CXR14_FINDINGS])
    assert np.ptp(own) > 0.05  # the classes differ: the comparison below means something
    np.testing.assert_allclose(scores, own, atol=1e-5)


def _form(**fields: str) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _wait_for_training(server: Server) -> dict:
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while (task := server.request("GET", "/train/"))["status"] in ("SUBMITTED", "RUNNING"):
        assert time.monotonic() < deadline, f"training still running after {TRAIN_TIMEOUT_S} s:\n{server.log_tail()}"
        time.sleep(2)
    return task


def test_config_expressions_in_requests_are_refused(server, tmp_path):
    """The reported attack: a request field holding a MONAI config expression ran as Python in the server."""
    marker = tmp_path / "marker"
    payload = f"$__import__('pathlib').Path({str(marker)!r}).write_text('ran') and 1"
    attack = {"max_epochs": payload, "val_split": 0.5, "device": "cpu", "multi_gpu": False}

    # training in the background (the default): the task ends as ERROR, refused before MONAI Label's task runs
    started = server.request("POST", f"/train/{BTCV}", attack)
    assert started["status"] in ("SUBMITTED", "RUNNING")
    task = _wait_for_training(server)
    assert task["id"] == started["id"] and task["status"] == "ERROR", f"{task}\n{server.log_tail()}"
    assert "Request field 'max_epochs' is refused" in "\n".join(task["details"])
    assert "Train Request:" not in "\n".join(task["details"])  # MONAI Label's BundleTrainTask.__call__ never ran

    # training run synchronously, and the other refusals: HTTP 422 naming the field
    for params, field in [
        (attack, "max_epochs"),
        ({"max_epochs": 1, "device": "cpu", "pretrained": "false"}, "pretrained"),
        ({"max_epochs": 1, "device": "cpu", "model_filename": "../../x.pt"}, "model_filename"),
        ({"max_epochs": 1, "device": "cpu", "train#trainer#max_epochs": 1}, "train#trainer#max_epochs"),
    ]:
        status, _, body = server.raw("POST", f"/train/{BTCV}?run_sync=true", json.dumps(params).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
        assert status == 422 and field in json.loads(body)["detail"], (status, body[:500])

    # inference: the request's params (a form field, which a web page may send without a CORS preflight)
    for params, field in [
        ({"device": payload}, "device"),
        ({"label_info": {"x": [payload]}}, "label_info.x[0]"),
        ({"label_tag": "../../outside"}, "label_tag"),
        ({"model_filename": "../../../x.pt"}, "model_filename"),
    ]:
        body, headers = _form(params=json.dumps(params))
        status, _, answer = server.raw("POST", f"/infer/{BTCV}?image=img0001&output=json", body, headers)
        assert status == 422 and field in json.loads(answer)["detail"], (status, answer[:500])

    time.sleep(5)  # nothing else left running that could still write it
    assert not marker.exists()


def test_requests_from_another_browser_origin_are_refused(server):
    evil = {"Origin": "http://evil.example"}
    preflight = {**evil, "Access-Control-Request-Method": "POST"}
    status, headers, _ = server.raw("OPTIONS", f"/train/{BTCV}", headers=preflight)
    assert status == 403 and headers.get("access-control-allow-origin") is None
    body, form = _form(params="{}")  # a form POST needs no preflight: refused as well
    status, headers, _ = server.raw("POST", f"/infer/{CXR}?image={CXR_IMAGE}&output=json", body, {**form, **evil})
    assert status == 403 and headers.get("access-control-allow-origin") is None
    own = {"Origin": server.url, "Access-Control-Request-Method": "POST"}  # the server's own origin still answers
    status, headers, _ = server.raw("OPTIONS", f"/train/{BTCV}", headers=own)
    assert status == 200 and headers.get("access-control-allow-origin") == server.url


def test_one_training_epoch_on_datastore_labels(server, tmp_path):
    model_pt = server.bundles / BTCV / "models" / "model.pt"
    before = torch.load(model_pt, map_location="cpu", weights_only=True)
    written = model_pt.stat().st_mtime_ns
    for n in (1, 2):
        saved = server.put_file(f"/datastore/label?image=img000{n}&tag=final", "label",
                                SHARED_DATA / "btcv" / "labelsTr" / f"label000{n}.nii.gz")  # fmt: skip
        assert saved == {"image": f"img000{n}", "label": f"img000{n}"}

    started = server.request(
        "POST", f"/train/{BTCV}", {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False}
    )
    assert started["status"] in ("SUBMITTED", "RUNNING")
    task = _wait_for_training(server)
    assert task["status"] == "DONE", f"training ended as {task['status']}:\n{server.log_tail()}"
    log = server.log.read_text(errors="replace")  # the server logs every line of its training process
    assert "Epoch: 1/1, Iter: 1/1" in log  # one epoch, one training image (the other validates)
    # continued from the served weights (read through the baked copy's link to the bundle's models/)
    restored = re.search(rf"Restored all variables from \S*/{BTCV}/models/model\.pt", log)
    assert restored
    # the bundle's MAE encoder was loaded before (when the trainer was built): the fine-tuned weights won
    encoder = re.search(rf"pre-trained encoder from \S*/{BTCV}/models/mae\.pt: \d+ tensors loaded", log)
    assert encoder and encoder.start() < restored.start()
    assert re.search(r"Epoch\[1\] Metrics -- (val_\w+: \S+ )*val_mean_dice: \d", log)  # validated on the other image
    # the best model of the run, written by the bundle's checkpoint saver, replaced the served one
    assert model_pt.stat().st_mtime_ns > written
    after = torch.load(model_pt, map_location="cpu", weights_only=True)
    assert after.keys() == before.keys() and all(after[k].shape == before[k].shape for k in before)

    # the server reloads the new weights for its next answer, still in the image's geometry
    seg = _infer_label_map(server, BTCV, "img0001", tmp_path)
    assert seg.shape == nib.load(server.studies / "img0001.nii.gz").shape
    assert "Reload model from cache" in server.log.read_text(errors="replace")
