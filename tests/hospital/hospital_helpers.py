"""Helpers of the hospital path's tests (imported by name: ``tests/hospital`` is on pytest's ``pythonpath``): a live
Orthanc PACS started with ``scripts/orthanc.sh`` on free ports in a temporary folder (always stopped afterwards),
DICOMweb requests to it, small synthetic volumes, the commands of docs/monailabel.md's hospital section, and a live
MONAI Label server of the PACS (:class:`PacsServer`, :func:`serving`: started with a documented command).

A live Orthanc skips the test, saying why, where Orthanc or its DICOMweb plugin is not installed (``bash
scripts/setup_orthanc.sh`` installs both; ``.ci/run`` calls it, so in CI they run).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bundle_configs import BundleConfigs
from bundle_weights import write_quick_weights
from live_server import Server, copy_app, fresh_weights, utf8_ctype

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
ORTHANC_SH = REPO / "scripts" / "orthanc.sh"
DOC = REPO / "docs" / "monailabel.md"
HOSPITAL_SECTION = "## Hospital deployment (DICOMweb)"
COMMAND_TIMEOUT_S = 600
CURL = "curl -sS --fail-with-body"  # in the documented commands: an HTTP error fails the command, its answer shown
MONAILABEL = "http://127.0.0.1:{port}"  # the documented server's root (a template: the port)
TEST_SERVER_OPTIONS = ("--conf", "skip_trainers", "true")  # with the server's --port, --app, --bundles, --configs quick
PLUGIN_PLACES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc")
SCRIPT_TIMEOUT_S = 90  # orthanc.sh itself waits at most 30 s for Orthanc to answer, and 30 s for it to stop


def orthanc_missing() -> str | None:
    """Why a live Orthanc cannot run here, or ``None``."""
    binary = os.environ.get("ORTHANC") or shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not os.access(binary, os.X_OK):
        return "Orthanc is not installed (run: bash scripts/setup_orthanc.sh; .ci/run does)"
    plugin = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    if not (plugin and Path(plugin).is_file()) and not any(
        Path(p).is_file() or any(Path(p).glob("libOrthancDicomWeb.so*")) for p in PLUGIN_PLACES if Path(p).exists()
    ):
        return "Orthanc's DICOMweb plugin is not installed (run: bash scripts/setup_orthanc.sh)"
    return None


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", str(ORTHANC_SH), *args], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"orthanc.sh {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result


@dataclass
class Pacs:
    """A running Orthanc: its folder, HTTP root, DICOMweb root, credentials and ports."""

    storage: Path
    url: str
    http_port: int
    dicom_port: int
    auth: tuple[str, str]

    @property
    def dicomweb(self) -> str:
        return self.url + "dicom-web"

    @property
    def pid(self) -> int:
        return int((self.storage / "orthanc.pid").read_text().strip())

    def request(
        self,
        path: str,
        method: str = "GET",
        accept: str = "application/dicom+json",
        body: bytes | None = None,
        auth: bool = True,
    ) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` of ``<method> <url><path>`` (at most 60 s)."""
        request = urllib.request.Request(
            self.url + path.lstrip("/"), data=body, method=method, headers={"Accept": accept}
        )
        if auth:
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read()

    def json(self, path: str) -> list | dict:
        status, _, body = self.request(path)
        assert status == 200, f"GET {path}: HTTP {status} {body[:300]!r}"
        return json.loads(body)


def multipart_parts(body: bytes, content_type: str) -> list[bytes]:
    """The contents of the parts of a multipart/related answer (WADO-RS), headers removed."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    assert match, f"no boundary in {content_type!r}"
    delimiter = b"--" + match.group(1).encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):  # the closing delimiter
            break
        _, _, content = chunk.partition(b"\r\n\r\n")
        parts.append(content[:-2] if content.endswith(b"\r\n") else content)
    return parts


@contextlib.contextmanager
def running_orthanc(storage: Path, dicom_port: int | None = None) -> Iterator[Pacs]:
    """Start Orthanc with ``scripts/orthanc.sh`` on free ports in ``storage`` (``dicom_port`` 0: no DICOM port);
    always stop it afterwards (and kill it, should the script fail to)."""
    reason = orthanc_missing()
    if reason:
        pytest.skip(reason)
    http_port = free_port()
    dicom_port = free_port() if dicom_port is None else dicom_port
    try:
        orthanc_sh("start", "--storage", str(storage), "--http_port", str(http_port), "--dicom_port", str(dicom_port))
        user, _, password = (storage / "credentials").read_text().strip().partition(":")
        yield Pacs(storage, f"http://127.0.0.1:{http_port}/", http_port, dicom_port, (user, password))
    finally:
        pid_file = storage / "orthanc.pid"
        pid = pid_file.read_text().strip() if pid_file.is_file() else ""
        try:
            orthanc_sh("stop", "--storage", str(storage), check=False)
        finally:
            if pid.isdigit() and Path(f"/proc/{pid}").exists():
                os.kill(int(pid), 9)


def wait_until_gone(pid: int, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.1)
    return False


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray) -> Path:
    """A small synthetic NIfTI volume (for the cases the real CTs do not cover)."""
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return path


def _pdu_item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def dicom_association_answer(port: int, calling_aet: str, called_aet: str = "ORTHANC") -> int:
    """Send a DICOM A-ASSOCIATE-RQ (PS3.8 9.3.2: verification SOP class, implicit VR little endian) to
    ``127.0.0.1:port`` and return the answer's PDU type: 2 accepted (A-ASSOCIATE-AC), 3 rejected (A-ASSOCIATE-RJ)."""
    application_context = _pdu_item(0x10, b"1.2.840.10008.3.1.1.1")
    presentation_context = _pdu_item(
        0x20, bytes([1, 0, 0, 0]) + _pdu_item(0x30, b"1.2.840.10008.1.1") + _pdu_item(0x40, b"1.2.840.10008.1.2")
    )
    user_information = _pdu_item(0x50, _pdu_item(0x51, struct.pack(">I", 16384)))
    body = (
        struct.pack(">HH", 1, 0)
        + called_aet.encode().ljust(16)
        + calling_aet.encode().ljust(16)
        + bytes(32)
        + application_context
        + presentation_context
        + user_information
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack(">BBI", 1, 0, len(body)) + body)
        answer = s.recv(1)
        if answer == b"\x02":  # release politely: A-RELEASE-RQ
            s.sendall(struct.pack(">BBI", 5, 0, 4) + bytes(4))
    return answer[0] if answer else -1


def documented_commands(section: str = HOSPITAL_SECTION) -> list[str]:
    """The commands of a section of docs/monailabel.md: its ``bash`` blocks, ``\\`` continuations joined, comments
    dropped, spaces collapsed."""
    text = DOC.read_text()
    assert section in text, f"{DOC} has no section {section!r}"
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


def run(command: str, cwd: Path = REPO) -> str:
    """Run one rendered command with bash (at most :data:`COMMAND_TIMEOUT_S`); its standard output."""
    done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, f"{command}\nfailed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout


class PacsServer(Server):
    """A documented ``serve_monailabel.sh --studies <DICOMweb URL> ...`` command (``serve``, a template filled with
    ``values``), run with the test's port, app copy and bundles folder, quick-size weights and no trainers (unless
    ``trainers``)."""

    def __init__(
        self, root: Path, port: int, values: Mapping[str, str], serve: str, *options: str, trainers: bool = False
    ) -> None:
        super().__init__(root, port)
        self.values, self.serve, self.options, self.trainers = dict(values), serve, options, trainers

    def command(self) -> list[str]:
        argv = shlex.split(self.serve.format(**self.values))
        argv[1] = str(REPO / argv[1])  # scripts/serve_monailabel.sh, from any working directory
        extra = ["--port", str(self.port), "--app", str(self.app), "--bundles", str(self.bundles)]
        return [*argv, *extra, "--configs", "quick", *(() if self.trainers else TEST_SERVER_OPTIONS), *self.options]


@contextlib.contextmanager
def serving(server: Server, bundles: Sequence[str]) -> Iterator[Server]:
    """``server`` started on freshly initialised quick-size weights of ``bundles`` (each bundle's configs copied; with
    trainers, the quick MAE encoder the fine-tuning loads first), always stopped afterwards."""
    for name in bundles:
        shutil.copytree(REPO / "bundles" / name / "configs", server.bundles / name / "configs")
        with utf8_ctype():
            fresh_weights(server.bundles / name, name)
            if getattr(server, "trainers", False):  # the fine-tuning config's MAE encoder (model.pt loads over it)
                write_quick_weights(server.bundles / name, ("mae.pt",))
    copy_app(server.app)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def own_inference(bundle: str, image: Path, model: Path, out: Path) -> Path:
    """The bundle's own inference workflow (quick) on ``image`` with ``model``, written to ``out``; ``out``."""
    with utf8_ctype():
        wf = BundleConfigs(bundle).workflow(
            "inference", "inference", dataset_dir=str(image), model_path=str(model), output_dir=str(out)
        )
        wf.run()
        wf.finalize()
    return out
