"""A live MONAI Label server of scripts/serve_monailabel.sh on 127.0.0.1, for the tests of tests/monailabel.

The server runs on a studies folder of real samples from ../shared/data (two BTCV CTs, the MSD Task01 4-D MRI, one
chest X-ray) with freshly initialised quick-size networks saved as each bundle's models/model.pt (and models/mae.pt
for the segmentation bundles, as after the bundle's own pre-training). The app serves them with ``--configs quick``,
from copies whose configs have configs/quick.yaml baked in. One server is started for the whole test session
(``conftest.py``); each test file that uses it is marked slow and skipped where MONAI Label is not installed.
"""

from __future__ import annotations

import contextlib
import json
import locale
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch
from bundle_configs import BundleConfigs
from bundle_weights import write_quick_weights

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
VENV = Path(os.environ.get("MONAILABEL_VENV", REPO / ".venv-monailabel"))
BTCV, BRATS, CXR = "btcv_mae_segmentation", "brats_mae_segmentation", "cxr14_mae_classification"
CXR_IMAGE = "00000211_000"  # a grey 256 x 256 radiograph
STARTUP_TIMEOUT_S = 240
MAX_UPLOAD_MB = 16  # the server's upload limit here (the fuzzer sends a body over it)


def monailabel_installed() -> bool:
    return (VENV / "bin" / "python").exists() and any(VENV.glob("lib/python3*/site-packages/monailabel/__init__.py"))


LIVE = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not monailabel_installed(),
        reason=f"MONAI Label is not installed in {VENV}: run `bash scripts/setup_monailabel.sh` (CI does)",
    ),
]


class Server:
    """A MONAI Label server process and its folders; HTTP helpers return decoded bodies."""

    def __init__(self, root: Path, port: int, args: tuple[str, ...] = (), headers: dict | None = None) -> None:
        self.root, self.port, self.args, self.headers = root, port, tuple(args), dict(headers or {})
        self.url = f"http://127.0.0.1:{port}"
        self.studies, self.bundles, self.app = root / "studies", root / "bundles", root / "app"
        self.tmpdir = root / "tmp"  # the TMPDIR the script is started with (it makes its private folder there)
        self.log = root / "server.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            "bash",
            str(REPO / "scripts" / "serve_monailabel.sh"),
            "--studies",
            str(self.studies),
            "--port",
            str(self.port),
            "--app",
            str(self.app),
            "--bundles",
            str(self.bundles),
            "--configs",
            "quick",
            "--max_upload_mb",
            str(MAX_UPLOAD_MB),
            *self.args,
        ]

    def start(self) -> None:
        cmd = self.command()
        self.tmpdir.mkdir(exist_ok=True)
        env = {**os.environ, "TMPDIR": str(self.tmpdir)}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
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
        headers = {**self.headers, **(headers or {})}
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
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers={**self.headers, **(headers or {})}
        )
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_weights(bundle: Path, name: str) -> None:
    """A freshly initialised quick-size network as ``bundle/models/model.pt``."""
    torch.manual_seed(0)
    network = BundleConfigs(name).parser("inference").get_parsed_content("network_def")
    if name == CXR:
        torch.nn.init.normal_(network.head.weight, std=0.5)  # probabilities that differ from 0.5 and between classes
    (bundle / "models").mkdir(parents=True)
    torch.save(network.state_dict(), bundle / "models" / "model.pt")


def start_server(tmp_path_factory) -> Server:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real sample data {SHARED_DATA} is absent (it exists in CI beside the checkout, not in a fresh clone)"
        )
    srv = Server(tmp_path_factory.mktemp("monailabel"), free_port())
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
        fresh_weights(srv.bundles / name, name)
        if name != CXR:  # the fine-tuning config's MAE encoder (the fine-tuned model.pt loads over it)
            write_quick_weights(srv.bundles / name, ("mae.pt",))
    copy_app(srv.app)
    srv.start()
    return srv


def copy_app(app: Path) -> None:
    """A copy of the app at ``app``: the server writes logs/ and model/ into its app folder."""
    shutil.copytree(REPO / "monailabel_app", app, ignore=shutil.ignore_patterns("__pycache__", "logs", "model", "bin"))


@contextlib.contextmanager
def utf8_ctype():
    """Reads the bundle configs as UTF-8 (the BraTS ones hold non-ASCII characters), as a fresh process does.

    MONAI opens config files with the locale's encoding; in a full test run an earlier test leaves the process's
    LC_CTYPE at an ASCII locale, and reading configs/inference.yaml then fails. The locale is restored afterwards.
    """
    saved = locale.setlocale(locale.LC_CTYPE)
    if locale.getpreferredencoding(False).upper().replace("-", "") != "UTF8":
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


def form(**fields: str) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def second_server(root: Path, source: Server, model: str, args: tuple[str, ...], headers: dict) -> Server:
    """A server of one bundle (``model``, with ``source``'s weights) in ``root``, started with ``args``."""
    srv = Server(root, free_port(), args, headers)
    srv.studies.mkdir(parents=True)
    shutil.copytree(source.bundles / model, srv.bundles / model)
    copy_app(srv.app)
    srv.start()
    return srv
