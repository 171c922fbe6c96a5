"""The guard's DICOMweb proxy client (monailabel_app/dicomweb_proxy.py ``PacsReader``) against a PACS that misbehaves:
a local HTTP server on 127.0.0.1 that answers errors, redirects, slowly, too much or in a foreign content type. The
proxy's answers from a real PACS (Orthanc) are tested live in tests/hospital/test_monailabel_dicomweb.py."""

from __future__ import annotations

import http.server
import threading
import time

import pytest
import requests
from app_modules import load_app_modules

dp = load_app_modules("dicomweb_access", "dicomweb_proxy")["dicomweb_proxy"]


class Pacs(http.server.BaseHTTPRequestHandler):
    """Answers by path: ``/dicom-web/<case>/...``; records each request's path and headers."""

    seen: list[tuple[str, dict]] = []

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        Pacs.seen.append((self.path, dict(self.headers)))
        case = self.path.split("/")[2]
        base = f"http://127.0.0.1:{self.server.server_port}/dicom-web"
        if case == "fail":
            self._answer(500, "text/plain", b"boom")
        elif case == "missing":
            self._answer(404, "application/json", b'{"Message": "Unknown resource"}')
        elif case == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        elif case == "slow":
            time.sleep(1.5)
            self._answer(200, "application/dicom+json", b"[]")
        elif case == "big":
            self._answer(200, "application/octet-stream", b"x" * 4096)
        elif case == "endless":  # no Content-Length: the answer ends when the connection closes (HTTP/1.0)
            self.send_response(200)
            self.send_header("Content-Type", "multipart/related; type=application/octet-stream")
            self.end_headers()
            self.wfile.write(b"x" * 4096)
        elif case == "frame":
            self._answer(200, "application/octet-stream", bytes(range(256)) * 16)
        elif case == "html":
            self._answer(200, "text/html", b"<script>alert(1)</script>")
        else:  # metadata with a bulk-data URI at the PACS
            uri = f"{base}/studies/1.2/series/1.3/instances/1.4/bulk/7fe00010"
            self._answer(200, "application/dicom+json", f'[{{"7FE00010": {{"BulkDataURI": "{uri}"}}}}]'.encode())

    def _answer(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the client that gave up on "slow" leaves a broken pipe
        pass


@pytest.fixture(scope="module")
def pacs_url():
    server = QuietServer(("127.0.0.1", 0), Pacs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/dicom-web"
    finally:
        server.shutdown()


def reader(url, **kw):
    session = requests.Session()
    session.auth = ("pacs-user", "pacs-password")
    return dp.PacsReader(url, session, **kw)


def test_an_answer_is_passed_on_with_bulk_data_uris_pointing_at_the_proxy(pacs_url):
    Pacs.seen.clear()
    got = reader(pacs_url).get("ok/metadata", False, {}, "application/dicom+json", "/ml/proxy/dicom/wado")
    assert got.status == 200 and got.content_type == "application/dicom+json"
    assert (
        got.body
        == b'[{"7FE00010": {"BulkDataURI": "/ml/proxy/dicom/wado/studies/1.2/series/1.3/instances/1.4/bulk/7fe00010"}}]'
    )
    ((path, headers),) = Pacs.seen
    assert path == "/dicom-web/ok/metadata"
    assert headers["Accept"] == "application/dicom+json" and headers["Authorization"].startswith("Basic ")


def test_the_prefixes_and_the_query_reach_the_pacs(pacs_url):
    Pacs.seen.clear()
    r = reader(pacs_url, qido_prefix="/q/", wado_prefix="w")
    r.get("ok", True, {"PatientName": "*Doe*", "limit": "5"}, None, "/proxy/dicom/wado")
    r.get("ok/metadata", False, {}, None, "/proxy/dicom/wado")
    assert [p for p, _ in Pacs.seen] == ["/dicom-web/q/ok?PatientName=%2ADoe%2A&limit=5", "/dicom-web/w/ok/metadata"]


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("fail", 502, "HTTP 500"),
        ("redirect", 502, "HTTP 302"),  # never followed: the PACS cannot point the server elsewhere
        ("slow", 504, "in time"),
        ("big", 502, "over"),
    ],
)
def test_a_pacs_that_misbehaves_is_a_502_or_504_naming_the_path(pacs_url, monkeypatch, case, status, words):
    monkeypatch.setattr(dp, "MAX_ANSWER", 1024)
    with pytest.raises(dp.ProxyRefused) as e:
        reader(pacs_url, timeout=(2.0, 0.5)).get(f"{case}/x", True, {}, None, "/proxy/dicom/wado")
    assert e.value.status == status and words in str(e.value) and f"{case}/x" in str(e.value)
    assert "pacs-password" not in str(e.value)


def test_a_missing_resource_stays_a_404(pacs_url):
    got = reader(pacs_url).get("missing/x", False, {}, None, "/proxy/dicom/wado")
    assert got.status == 404


def test_a_foreign_content_type_is_served_as_bytes(pacs_url):
    got = reader(pacs_url).get("html/x", False, {}, None, "/proxy/dicom/wado")
    assert got.content_type == "application/octet-stream"
    assert got.read() == b"<script>alert(1)</script>"


def test_pixel_data_is_streamed_and_cut_past_the_cap(pacs_url, monkeypatch):
    got = reader(pacs_url).get("frame/x", False, {}, None, "/proxy/dicom/wado")
    assert got.stream is not None and got.body == b""  # passed on as it arrives, not held whole
    assert got.read() == bytes(range(256)) * 16
    monkeypatch.setattr(dp, "MAX_ANSWER", 1024)
    got = reader(pacs_url).get("endless/x", False, {}, None, "/proxy/dicom/wado")  # no length declared
    with pytest.raises(dp.ProxyRefused, match="over"):
        got.read()


def test_a_pacs_that_is_down_is_a_502():
    with pytest.raises(dp.ProxyRefused) as e:
        reader("http://127.0.0.1:9/dicom-web", timeout=(1.0, 1.0)).get("studies", True, {}, None, "/p")
    assert e.value.status == 502 and "does not answer" in str(e.value)
