"""The guard in front of every MONAI Label route (monailabel_app/server_guard.py), driven as an ASGI app.

The guard needs Starlette, not MONAI Label: it runs here in the project's environment, in front of a recording app
that stands for MONAI Label's server, with a fake view of what the server serves. Each refusal is checked to keep the
request from the server; each accepted request is checked to reach it with its body unchanged.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import io
import json
import re
import sys
import tempfile
import urllib.parse
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from app_modules import load_app_modules

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "monailabel_app"
_modules = load_app_modules("request_checks", "uploads", "dicomweb_access", "dicomweb_proxy", "server_guard")
sg, rc, dp = _modules["server_guard"], _modules["request_checks"], _modules["dicomweb_proxy"]

MODEL, TRAINER = "btcv_mae_segmentation", "btcv_mae_segmentation"
SERIES = "1.2.826.0.1.3680043.8.498.12345678901234567890"  # a Series Instance UID in a PACS datastore
TOKEN = "t" * 40


class FakeView:
    def __init__(self, pacs: bool = False, dcmqi: bool = False) -> None:
        self.images = {SERIES, "1.2.3"} if pacs else {"img0001", "00000211_000"}
        self.labels = {(SERIES, "final")} if pacs else {("img0001", "final")}
        self.pacs, self.dcmqi = pacs, dcmqi
        self.asked: list[str] = []  # the image ids looked up in the datastore
        self.reader = FakeReader() if pacs else None

    def dicomweb(self):
        return self.pacs

    def pacs_reader(self):
        return self.reader

    def dicom_seg_writer(self):
        return self.dcmqi

    def models(self):
        return [MODEL, "cxr14_mae_classification"]

    def classifiers(self):
        return ["cxr14_mae_classification"]

    def trainers(self):
        return [TRAINER]

    def strategies(self):
        return ["random", "first"]

    def scoring_methods(self):
        return []

    def has_image(self, image_id):
        self.asked.append(image_id)
        return image_id in self.images

    def has_label(self, image_id, tag):
        return (image_id, tag) in self.labels

    def facts(self, model):
        return rc.TaskFacts(bundle_path=f"/srv/bundles/{model}", devices=("cpu",))


class FakeReader:
    """Stands for the PACS behind the guard's DICOMweb proxy: records what it is asked."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []

    def get(self, path, search, query, accept, proxy_root):
        self.asked.append((path, search, query, accept, proxy_root))
        return dp.ProxyAnswer(200, "application/dicom+json", b"[]")


class Recorder:
    """Stands for MONAI Label's server: records each request that reaches it and its body."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append((scope["method"], scope["path"], body))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})


def call(guard, method, path, query="", headers=None, body=b"", root_path=""):
    """``(status, decoded JSON or text)`` of one request through ``guard``."""
    headers = {"host": "127.0.0.1:8000", **(headers or {})}
    if body:
        headers.setdefault("content-length", str(len(body)))
    scope = {
        "type": "http",
        "method": method,
        "path": root_path + path,
        "query_string": query.encode(),
        "root_path": root_path,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()],
    }
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    sent: list[dict] = []

    async def receive():
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    status = sent[0]["status"]
    data = b"".join(m.get("body", b"") for m in sent[1:])
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode(errors="replace")


def multipart(fields: dict[str, str] | None = None, files: dict[str, tuple[str, bytes]] | None = None):
    boundary = uuid.uuid4().hex
    body = b""
    for k, v in (fields or {}).items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    for k, (filename, data) in (files or {}).items():
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def nifti_gz(shape=(8, 8, 4), dtype=np.int16) -> bytes:
    img = nib.Nifti1Image(np.arange(np.prod(shape)).reshape(shape).astype(dtype), np.eye(4))
    return gzip.compress(img.to_bytes())


@pytest.fixture
def server():
    inner = Recorder()
    guard = sg.Guard(inner, FakeView(), sg.Policy(origins=frozenset({"http://127.0.0.1:8000"}), max_upload=1 << 20))
    return guard, inner


def test_foreign_host_and_origin_are_refused(server):
    guard, inner = server
    assert call(guard, "GET", "/info/", headers={"host": "evil.example:8000"})[0] == 403
    assert call(guard, "GET", "/info/", headers={"host": "127.0.0.1.evil.example"})[0] == 403
    assert call(guard, "GET", "/info/", headers={"origin": "http://evil.example"})[0] == 403
    assert inner.seen == []
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"):
        assert call(guard, "GET", "/info/", headers={"host": host})[0] == 200, host
    assert call(guard, "GET", "/info/", headers={"origin": "http://127.0.0.1:8000"})[0] == 200
    assert len(inner.seen) == 5


def test_token_on_every_route_but_health():
    inner = Recorder()
    guard = sg.Guard(inner, FakeView(), sg.Policy(token=TOKEN))
    assert call(guard, "GET", "/health")[0] == 200
    assert call(guard, "GET", "/info/")[0] == 401
    assert call(guard, "GET", "/datastore/image", "image=img0001", {"authorization": "Bearer " + "x" * 40})[0] == 401
    assert call(guard, "GET", "/info/", headers={"authorization": TOKEN})[0] == 401  # not a bearer token
    assert inner.seen == []
    assert call(guard, "GET", "/info/", headers={"authorization": f"Bearer {TOKEN}"})[0] == 200
    assert [s[1] for s in inner.seen] == ["/info/"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/etc/passwd", 404),
        ("POST", "/info/", 405),
        ("PUT", f"/model/{MODEL}", 403),  # weights are not uploaded over HTTP
        ("DELETE", f"/model/{MODEL}", 403),
        ("PUT", "/session/", 403),
        ("GET", "/proxy/dicom/qido/../../tools/execute-script", 403),
        ("POST", f"/infer/wsi_v2/{MODEL}", 403),
        ("GET", "/ohif/../../../etc/passwd", 404),
        ("GET", "/static/..", 404),
        ("POST", "/infer/nope", 404),
        ("POST", "/train/cxr14_mae_classification", 404),  # served, but not trained
        ("POST", "/activelearning/nope", 404),
        ("POST", "/scoring/anything", 404),
    ],
)
def test_routes_refused(server, method, path, status):
    guard, inner = server
    assert call(guard, method, path)[0] == status
    assert inner.seen == []


def test_datastore_ids_and_tags_stay_in_their_folders(server):
    guard, inner = server
    image = nifti_gz()
    for query in ["image=../app/sitecustomize", "image=/etc/cron.d/x", "image=.hidden", "image=a%2Fb", "image=a%00b"]:
        body, headers = multipart(files={"file": ("x.nii.gz", image)})
        status, answer = call(guard, "PUT", "/datastore/image", query, headers, body)
        assert status == 422 and "'image'" in answer["detail"], (query, answer)
    # no id given: MONAI Label names the image after the uploaded file
    body, headers = multipart(files={"file": ("../../sitecustomize.py", b"open('/tmp/m', 'w')")})
    status, answer = call(guard, "PUT", "/datastore/image", "", headers, body)
    assert status == 422 and "plain name" in answer["detail"]
    body, headers = multipart(files={"file": ("sitecustomize.py", b"open('/tmp/m', 'w')")})
    assert call(guard, "PUT", "/datastore/image", "", headers, body)[0] == 415
    body, headers = multipart(files={"file": ("..nii.gz", image)})
    assert call(guard, "PUT", "/datastore/image", "", headers, body)[0] == 422
    body, headers = multipart(files={"label": ("x.nii.gz", image)})
    status, answer = call(guard, "PUT", "/datastore/label", "image=img0001&tag=../../app", headers, body)
    assert status == 422 and "'tag'" in answer["detail"]
    status, answer = call(guard, "PUT", "/datastore/label", "image=../img0001&tag=final", headers, body)
    assert status == 404
    assert call(guard, "DELETE", "/datastore/image", "id=../../x")[0] == 404
    assert call(guard, "GET", "/datastore/label", "label=img0001&tag=../final")[0] == 422
    assert inner.seen == []
    # accepted: a new id, a NIfTI image, and a label of an image in the datastore
    body, headers = multipart(fields={"params": "{}"}, files={"file": ("new-ct_01.nii.gz", image)})
    assert call(guard, "PUT", "/datastore/image", "", headers, body)[0] == 200
    assert inner.seen[-1] == ("PUT", "/datastore/image", body)  # handed on unchanged
    body, headers = multipart(files={"label": ("img0001.nii.gz", nifti_gz(dtype=np.uint8))})
    assert call(guard, "PUT", "/datastore/label", "image=img0001&tag=final", headers, body)[0] == 200
    assert call(guard, "GET", "/datastore/label", "label=img0001&tag=final")[0] == 200


def test_uploads_must_be_images_and_fit(server):
    guard, inner = server
    jpeg = b"\xff\xd8\xff\xe0" + bytes(200)
    for filename, data, status, words in [
        ("x.png", jpeg, 415, "JPEG data, not PNG"),
        ("x.nii.gz", np.random.default_rng(0).bytes(4096), 415, "not gzip-compressed NIfTI"),
        ("x.nii.gz", gzip.compress(b"x" * 4096), 415, "not a NIfTI image"),
        ("x.nii.gz", nifti_gz()[:-20], 415, "truncated"),
        ("x.nii.gz", nifti_gz() + b"junk", 415, "after its gzip stream"),
        ("x.exe", nifti_gz(), 415, "files only"),
        (
            "x.nii.gz",
            gzip.compress(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)).to_bytes() + bytes(9)),
            415,
            "more bytes than its NIfTI header declares",
        ),
    ]:
        body, headers = multipart(files={"file": (filename, data)})
        status_, answer = call(guard, "PUT", "/datastore/image", "image=x", headers, body)
        assert status_ == status and words in answer["detail"] and filename in answer["detail"], answer
    big = gzip.compress(np.random.default_rng(0).bytes(2 << 20))
    body, headers = multipart(files={"file": ("big.nii.gz", big)})
    assert call(guard, "PUT", "/datastore/image", "image=big", headers, body)[0] == 413
    headers["content-length"] = str(10 << 20)  # refused on the declared length, before reading
    assert call(guard, "PUT", "/datastore/image", "image=big", headers, body)[0] == 413
    assert call(guard, "POST", "/train/", "", {"content-type": "application/json"}, b" " * (2 << 20))[0] == 413
    assert inner.seen == []


def test_infer_takes_datastore_ids_and_checked_params(server):
    guard, inner = server
    for query, status in [
        ("image=/etc/passwd", 404),
        ("image=../studies/img0001", 404),
        ("", 422),
        ("image=img0001&session_id=x", 422),
        ("image=img0001&image=x", 422),
        ("image=img0001&output=../x", 422),
    ]:
        assert call(guard, "POST", f"/infer/{MODEL}", query)[0] == status, query
    for params, words in [
        ("[1, 2]", "must be a JSON object"),
        ("not json", "is not JSON"),
        ('{"image": "/etc/passwd"}', "set by the server"),
        ('{"model": "other"}', "must be the route's model"),
        ('{"bundle_path": "/tmp/x"}', "set by the server"),
        ('{"device": "$__import__(\'os\')"}', "config syntax"),
        ('{"gpus": "0\\u0000"}', "NUL"),
        ('{"timeout": NaN}', "timeout"),
    ]:
        body, headers = multipart(fields={"params": params})
        status, answer = call(guard, "POST", f"/infer/{MODEL}", "image=img0001", headers, body)
        assert status == 422 and words in answer["detail"], (params, answer)
    body, headers = multipart(files={"file": ("x.nii.gz", nifti_gz())})  # no uploads to /infer
    status, answer = call(guard, "POST", f"/infer/{MODEL}", "image=img0001", headers, body)
    assert status == 422 and "'file'" in answer["detail"]
    assert inner.seen == []
    body, headers = multipart(fields={"params": json.dumps({"device": "cpu", "model": MODEL})})
    assert call(guard, "POST", f"/infer/{MODEL}", "image=img0001&output=json", headers, body)[0] == 200
    assert call(guard, "POST", f"/infer/{MODEL}", "image=00000211_000")[0] == 200
    assert len(inner.seen) == 2


def test_train_body_fields_that_monai_label_reads_first(server):
    guard, inner = server
    route = f"/train/{TRAINER}"
    for params, words in [
        ({"model": "nope", "bundle_path": "../x"}, "must be the route's model"),
        ({"bundle_path": "../x"}, "set by the server"),
        ({"gpus": "0\x00"}, "NUL"),
        ({"gpus": 0}, "'gpus'"),
        ({"gpus": "0;rm"}, "'gpus'"),
        ({"max_epochs": "$1"}, "config syntax"),
        ({"pretrained": False}, "'pretrained'"),
        ({"unknown": 1}, "Unknown train request field"),
    ]:
        body = json.dumps(params).encode()
        status, answer = call(guard, "POST", route, "", {"content-type": "application/json"}, body)
        assert status == 422 and words in answer["detail"], (params, answer)
    assert call(guard, "POST", route, "", {"content-type": "application/json"}, b"[1]")[0] == 422
    assert call(guard, "POST", "/train/", "", {"content-type": "application/json"}, b'{"model": "x"}')[0] == 422
    assert call(guard, "POST", f"/batch/infer/{MODEL}", "", {}, b'{"images": ["/etc/passwd"]}')[0] == 422
    assert inner.seen == []
    ok = json.dumps({"model": TRAINER, "max_epochs": 1, "device": "cpu", "gpus": "0,1", "val_split": 0.2}).encode()
    assert call(guard, "POST", route, "run_sync=false", {"content-type": "application/json"}, ok)[0] == 200
    assert inner.seen == [("POST", route, ok)]


def test_other_monai_label_routes(server):
    guard, inner = server
    assert call(guard, "POST", "/activelearning/random", "", {}, b'{"strategy": "x"}')[0] == 422
    assert call(guard, "POST", "/activelearning/random", "", {}, b'{"client_id": "me"}')[0] == 200
    assert call(guard, "GET", "/logs/", "lines=-1")[0] == 422
    assert call(guard, "HEAD", "/datastore/image", "image=img0001&check_sum=SHA1:00")[0] == 422  # MONAI Label: 500
    assert call(guard, "GET", "/logs/", "lines=10&text=true")[0] == 200
    assert call(guard, "GET", "/datastore/dataset", "limit_cases=1")[0] == 403
    assert call(guard, "POST", f"/infer/{MODEL}", "image=img0001&output=dicom_seg")[0] == 422
    assert call(guard, "POST", "/infer/cxr14_mae_classification", "image=00000211_000&output=image")[0] == 422
    assert call(guard, "GET", "/logs/gpu")[0] == 403
    assert call(guard, "GET", f"/model/{MODEL}")[0] == 200
    assert call(guard, "GET", "/ohif/app.js", "StudyInstanceUIDs=1.2.3")[0] == 200
    assert call(guard, "GET", "/info/", root_path="/monailabel")[0] == 200  # behind a proxy's path prefix
    assert call(guard, "GET", "/../etc/passwd", root_path="/monailabel")[0] == 404
    body, headers = multipart(fields={"info": "[]"})
    assert call(guard, "PUT", "/datastore/image/info", "image=img0001", headers, body)[0] == 422
    assert len(inner.seen) == 5, inner.seen


def _pacs_guard(dcmqi: bool = False) -> tuple:
    inner = Recorder()
    return sg.Guard(inner, FakeView(pacs=True, dcmqi=dcmqi), sg.Policy(max_upload=1 << 20)), inner


NOT_UIDS = [
    "img0001",
    "../1.2.3",
    "1.2.3/../../etc/passwd",
    "/etc/passwd",
    "1..2",
    ".1.2",
    "1.2.",
    "1" * 65,
    "1.2.3\n",
    "1.2.3 ",
    "%2e%2e%2f1.2",
    "\uff11.\uff12",  # fullwidth digits: not DICOM's
    "1.2.3;rm",
    "",
]


def test_a_pacs_datastore_takes_series_uids_only():
    """On a DICOMweb datastore an image id is a Series Instance UID: anything else is refused before the datastore
    (MONAI Label joins it to its cache folder) is asked."""
    guard, inner = _pacs_guard()
    label = nifti_gz()
    for bad in NOT_UIDS:
        q = urllib.parse.quote(bad, safe="")
        body, headers = multipart(files={"label": ("l.nii.gz", label)})
        for method, path, query, extra in [
            ("POST", f"/infer/{MODEL}", f"image={q}", {}),
            ("GET", "/datastore/image", f"image={q}", {}),
            ("GET", "/datastore/image/info", f"image={q}", {}),
            ("GET", "/datastore/label", f"label={q}&tag=final", {}),
            ("DELETE", "/datastore/label", f"id={q}&tag=final", {}),
            ("PUT", "/datastore/label", f"image={q}&tag=final", headers),
        ]:
            status, answer = call(guard, method, path, query, extra, body if method == "PUT" else b"")
            assert status == 422, (bad, method, path, status, answer)
    assert guard.view.asked == [] and inner.seen == []
    assert call(guard, "POST", f"/infer/{MODEL}", "image=1.2.4")[0] == 404  # a UID, not in the PACS
    assert call(guard, "POST", f"/infer/{MODEL}", f"image={SERIES}&output=image")[0] == 200
    assert call(guard, "GET", "/datastore/label", f"label={SERIES}&tag=final")[0] == 200
    assert call(guard, "POST", f"/infer/{MODEL}", f"image={'1' * 64}")[0] == 404  # 64 characters: a UID
    # images come from the PACS: neither uploaded nor deleted here
    body, headers = multipart(files={"file": ("1.2.5.nii.gz", nifti_gz())})
    assert call(guard, "PUT", "/datastore/image", "image=1.2.5", headers, body)[0] == 403
    assert call(guard, "PUT", "/datastore/", "", headers, body)[0] == 403
    assert call(guard, "DELETE", "/datastore/image", f"id={SERIES}")[0] == 403
    assert call(guard, "DELETE", "/datastore/", f"id={SERIES}")[0] == 403
    # the DICOMweb proxy reads only
    for method in ("POST", "PUT", "DELETE"):
        assert call(guard, method, f"/proxy/dicom/wado/studies/{SERIES}/series/{SERIES}/metadata")[0] == 403
    assert len(inner.seen) == 2 and guard.view.reader.asked == []


def test_the_dicomweb_proxy_is_off_without_a_pacs(server):
    guard, inner = server
    for method, path in [("GET", "/proxy/dicom/qido/studies"), ("GET", f"/proxy/dicom/wado/studies/{SERIES}/metadata")]:
        status, answer = call(guard, method, path)
        assert status == 403 and "no PACS" in answer["detail"]
    assert inner.seen == []


S, R, N = "1.2.3", SERIES, "1.2.3.4.5"  # study, series and instance UIDs
PROXY_READS = [  # (op/path, query, the path asked of the PACS, whether it is a search)
    ("qido/studies", "limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060", "studies", True),
    ("qido/studies", "PatientName=%2ADoe%2A&StudyDate=20200101-20201231", "studies", True),
    (f"qido/studies/{S}/series", "includefield=all", f"studies/{S}/series", True),
    (f"qido/studies/{S}/series/{R}/instances", "", f"studies/{S}/series/{R}/instances", True),
    (f"qido/studies/{S}/series/{R}/metadata", "", f"studies/{S}/series/{R}/metadata", False),  # OHIF's quirk
    (f"wado/studies/{S}/metadata", "", f"studies/{S}/metadata", False),
    (f"wado/studies/{S}/series/{R}/metadata", "", f"studies/{S}/series/{R}/metadata", False),
    (f"wado/studies/{S}/series/{R}/instances/{N}/metadata", "", f"studies/{S}/series/{R}/instances/{N}/metadata", 0),
    (f"wado/studies/{S}/series/{R}/instances/{N}", "", f"studies/{S}/series/{R}/instances/{N}", False),
    (
        f"wado/studies/{S}/series/{R}/instances/{N}/frames/1,2,3",
        "",
        f"studies/{S}/series/{R}/instances/{N}/frames/1,2,3",
        0,
    ),
    (
        f"wado/studies/{S}/series/{R}/instances/{N}/bulk/7fe00010",
        "",
        f"studies/{S}/series/{R}/instances/{N}/bulk/7fe00010",
        0,
    ),
]


@pytest.mark.parametrize(("path", "query", "upstream", "search"), PROXY_READS)
def test_the_dicomweb_proxy_answers_a_viewers_reads_itself(path, query, upstream, search):
    guard, inner = _pacs_guard()
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    status, answer = call(guard, "GET", f"/proxy/dicom/{path}", query, {"accept": accept}, root_path="/ml")
    assert (status, answer) == (200, [])
    assert inner.seen == []  # answered by the guard, not by MONAI Label's proxy
    ((asked, is_search, asked_query, asked_accept, proxy_root),) = guard.view.reader.asked
    assert (asked, is_search, asked_accept, proxy_root) == (upstream, bool(search), accept, "/ml/proxy/dicom/wado")
    assert asked_query == dict(urllib.parse.parse_qsl(query))


PROXY_REFUSED = [  # (method, op/path, query, headers, status)
    ("GET", "stow/studies", "", {}, 404),
    ("GET", "qido/../../tools/execute-script", "", {}, 404),
    ("GET", "wado/studies", "", {}, 404),  # a search under the WADO root
    ("GET", f"qido/studies/{S}/series/{R}/instances/{N}/frames/1", "", {}, 404),  # a retrieve under the QIDO root
    ("GET", f"wado/studies/{S}", "", {}, 404),  # a whole study
    ("GET", f"wado/studies/{S}/series/{R}", "", {}, 404),  # a whole series
    ("GET", f"wado/studies/{S}/series/{R}/instances/{N}/frames/0", "", {}, 404),
    ("GET", f"wado/studies/{S}/series/{R}/instances/{N}/frames/1,", "", {}, 404),
    ("GET", f"wado/studies/{S}/series/{R}/instances/{N}/rendered", "", {}, 404),
    ("GET", f"wado/studies/{S}/series/{R}/instances/{N}/bulk/../../x", "", {}, 404),
    ("GET", f"wado/studies/{S}/series/{R}/instances/{N}/bulk/7fe0001", "", {}, 404),
    ("GET", "wado/studies/1.2.3a/metadata", "", {}, 404),
    ("GET", f"wado/studies/{'1' * 65}/metadata", "", {}, 404),
    ("GET", "wado/studies/http:%2F%2Fevil.example/metadata", "", {}, 404),
    ("GET", "qido/studies/", "", {}, 404),
    ("GET", "qido/studies", "requestType=WADO", {}, 422),  # a key the proxy does not pass on
    ("GET", "qido/studies", "PatientName=a%0Ab", {}, 422),
    ("GET", "qido/studies", f"PatientName={'a' * 257}", {}, 422),
    ("GET", "qido/studies", "limit=-1", {}, 422),
    ("GET", "qido/studies", "fuzzymatching=1", {}, 422),
    ("GET", "qido/studies", "includefield=00081030;x", {}, 422),
    ("GET", f"wado/studies/{S}/metadata", "x=1", {}, 422),  # a retrieve takes no query
    ("GET", "qido/studies", "", {"accept": "a" * 300}, 422),
    ("GET", "qido/studies", "", {"accept": "application/json\x01"}, 422),
    ("POST", "stow/studies", "", {}, 403),
    ("POST", "qido/studies", "", {}, 403),
    ("DELETE", f"wado/studies/{S}", "", {}, 403),
]


@pytest.mark.parametrize(("method", "path", "query", "headers", "status"), PROXY_REFUSED)
def test_the_dicomweb_proxy_refuses_all_else(method, path, query, headers, status):
    guard, inner = _pacs_guard()
    got, answer = call(guard, method, f"/proxy/dicom/{path}", query, headers)
    assert got == status, answer
    assert inner.seen == [] and guard.view.reader.asked == []


def test_the_dicomweb_proxy_takes_no_body():
    guard, inner = _pacs_guard()
    assert call(guard, "GET", "/proxy/dicom/qido/studies", body=b"x")[0] == 422
    assert inner.seen == [] and guard.view.reader.asked == []


def _infer_params(params: dict) -> tuple[bytes, dict]:
    return multipart(fields={"params": json.dumps(params)})


LABEL_INFO = [{"name": "spleen", "idx": 1, "color": [157, 108, 162]}, {"name": "liver", "idx": 6}]
BAD_LABEL_INFO = [
    ({"x": 1}, "list"),
    ([{"name": "spleen", "segmentAttribute": {"SegmentLabel": "x"}}], "segmentAttribute"),
    ([{"name": "a\\b"}], "name"),
    ([{"name": "x" * 65}], "name"),
    ([{"name": "a\nb"}], "name"),
    ([{"name": 1}], "name"),
    ([{"name": "$__import__('os')"}], "config syntax"),
    ([{"idx": 0}], "idx"),
    ([{"idx": True}], "idx"),
    ([{"idx": 1.5}], "idx"),
    ([{"color": [256, 0, 0]}], "color"),
    ([{"color": [1, 2]}], "color"),
    ([{"color": "red"}], "color"),
    (["spleen"], "object"),
    ([{"name": "s"}] * 256, "list"),
]


def test_dicom_seg_output_only_from_a_pacs_with_dcmqi(server):
    folder_guard, folder_inner = server
    body, headers = _infer_params({"label_info": LABEL_INFO})
    status, answer = call(folder_guard, "POST", f"/infer/{MODEL}", "image=img0001&output=dicom_seg", headers, body)
    assert status == 422 and "folder" in answer["detail"]
    query = "image=00000211_000&output=dicom_seg"
    assert call(folder_guard, "POST", "/infer/cxr14_mae_classification", query)[0] == 422
    assert folder_inner.seen == []

    guard, inner = _pacs_guard(dcmqi=False)
    status, answer = call(guard, "POST", f"/infer/{MODEL}", f"image={SERIES}&output=dicom_seg", headers, body)
    assert status == 422 and "itkimage2segimage" in answer["detail"] and "PUT /datastore/label" in answer["detail"]
    assert inner.seen == []

    guard, inner = _pacs_guard(dcmqi=True)
    status, answer = call(guard, "POST", f"/infer/{MODEL}", f"image={SERIES}&output=dicom_seg")
    assert status == 422 and "label_info" in answer["detail"]
    for label_info, words in BAD_LABEL_INFO:
        bad, bad_headers = _infer_params({"label_info": label_info})
        status, answer = call(guard, "POST", f"/infer/{MODEL}", f"image={SERIES}&output=dicom_seg", bad_headers, bad)
        assert status == 422 and words in answer["detail"], (label_info, answer)
    assert inner.seen == []
    assert call(guard, "POST", f"/infer/{MODEL}", f"image={SERIES}&output=dicom_seg", headers, body)[0] == 200
    assert len(inner.seen) == 1


def test_saved_label_info_is_checked():
    """``params.label_info`` of a saved label names the segments of the DICOM SEG written to the PACS."""
    guard, inner = _pacs_guard()
    label = ("l.nii.gz", nifti_gz())
    for label_info, words in BAD_LABEL_INFO:
        body, headers = multipart(fields={"params": json.dumps({"label_info": label_info})}, files={"label": label})
        status, answer = call(guard, "PUT", "/datastore/label", f"image={SERIES}&tag=final", headers, body)
        assert status == 422 and words in answer["detail"], (label_info, answer)
    for params, status in [({"model": "nope"}, 404), ({"model": 1}, 422), ({"model": "../x"}, 404)]:
        body, headers = multipart(fields={"params": json.dumps(params)}, files={"label": label})
        assert call(guard, "PUT", "/datastore/label", f"image={SERIES}&tag=final", headers, body)[0] == status, params
    assert inner.seen == []
    params = {"label_info": LABEL_INFO, "model": MODEL}
    body, headers = multipart(fields={"params": json.dumps(params)}, files={"label": label})
    assert call(guard, "PUT", "/datastore/label", f"image={SERIES}&tag=final", headers, body)[0] == 200
    assert len(inner.seen) == 1


def test_dicomweb_urls_and_credentials(tmp_path, capsys):
    """What ``serve_monailabel.sh --studies <URL> --dicomweb_credentials <file>`` accepts (``dicomweb_access.py``)."""
    access = sys.modules["dicomweb_access"]
    for url in [
        "http://127.0.0.1:8042/dicom-web",
        "http://localhost:8042/dicom-web/",
        "http://[::1]:8042/dicom-web",
        "http://127.0.0.2/dicom-web",
        "https://pacs.hospital.org/dicom-web",
        "https://pacs.hospital.org/dcm4chee-arc/aets/DCM4CHEE/rs",
    ]:
        assert access.check_dicomweb_url(url) == url.rstrip("/")
    assert access.check_dicomweb_url("http://10.0.0.5/dicom-web", allow_insecure=True) == "http://10.0.0.5/dicom-web"
    for url, words in [
        ("http://10.0.0.5/dicom-web", "--allow_insecure_dicomweb"),
        ("http://pacs.hospital.org/dicom-web", "in clear"),
        ("http://127.0.0.1.evil.example/dicom-web", "in clear"),
        ("http://user:secret@127.0.0.1:8042/dicom-web", "no user or password"),
        ("https://user@pacs/dicom-web", "no user or password"),
        ("ftp://127.0.0.1/dicom-web", "http"),
        ("ftp://user:secret@127.0.0.1/dicom-web", "no user or password"),
        ("file:///etc/passwd", "http"),
        ("http:///dicom-web", "no host"),
        ("http://127.0.0.1:99999/dicom-web", "range"),
        ("http://127.0.0.1/dicom-web?x=1", "query"),
        ("http://127.0.0.1/dicom-web#x", "fragment"),
        ("http://127.0.0.1/a/../dicom-web", "plain"),
        ("http://127.0.0.1/a/%2e%2e/dicom-web", "plain"),
        ("http://127.0.0.1/dicom web", "spaces"),
        ("http://127.0.0.1/dicom-web\n", "control"),
    ]:
        with pytest.raises(ValueError, match=re.escape(words)):
            access.check_dicomweb_url(url)
        assert "secret" not in words
    with pytest.raises(ValueError) as refused:
        access.check_dicomweb_url("http://user:secret@127.0.0.1/dicom-web")
    assert "secret" not in str(refused.value)  # the message does not repeat the password

    good = tmp_path / "credentials"
    good.write_text("orthanc:s3cret:with:colons\n")
    good.chmod(0o600)
    assert access.read_credentials(good) == ("orthanc", "s3cret:with:colons")
    for mode in (0o644, 0o640, 0o604, 0o660):
        good.chmod(mode)
        with pytest.raises(ValueError, match="mode 0600"):
            access.read_credentials(good)
    good.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(ValueError, match="link"):
        access.read_credentials(link)
    with pytest.raises(ValueError, match="mode 0600"):
        access.read_credentials(tmp_path)  # a folder
    for text in ["no-colon", ":nouser", "user:", "a:b\nc:d", "a:b\x00"]:
        bad = tmp_path / "bad"
        bad.write_text(text)
        bad.chmod(0o600)
        with pytest.raises(ValueError, match="user:password"):
            access.read_credentials(bad)
    assert access.main(["--url", "http://user:pw@127.0.0.1/x"]) == 2
    assert "no user or password" in capsys.readouterr().err
    assert access.main(["--url", "http://127.0.0.1:8042/dicom-web", "--credentials", str(good)]) == 0
    assert [access.is_uid(v) for v in ("1.2.840.10008.5.1.4.1.1.2", "0", "1" * 64)] == [True] * 3
    assert not any(access.is_uid(v) for v in NOT_UIDS + [None, 1.2, "1" * 65])


def test_layout_refuses_a_datastore_on_the_python_path(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("mae_layout", APP / "layout.py")
    layout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layout)
    app, bundles, studies = tmp_path / "app", tmp_path / "bundles", tmp_path / "studies"
    for d in (app, bundles, studies, app / "studies"):
        d.mkdir()
    monkeypatch.chdir(tmp_path / "bundles")
    monkeypatch.setenv("PYTHONPATH", "")
    assert layout.main(["--studies", str(studies), "--app", str(app), "--bundles", str(bundles)]) == 0
    assert layout.main(["--studies", str(app / "studies"), "--app", str(app), "--bundles", str(bundles)]) == 2
    assert "the app folder" in capsys.readouterr().err
    assert layout.main(["--studies", str(tmp_path), "--app", str(app), "--bundles", str(bundles)]) == 2
    monkeypatch.setenv("PYTHONPATH", str(studies))
    assert layout.main(["--studies", str(studies), "--app", str(app), "--bundles", str(bundles)]) == 2
    assert "PYTHONPATH entry" in capsys.readouterr().err


def test_upload_checks_accept_the_real_samples():
    data = REPO.parent / "shared" / "data"
    if not data.is_dir():
        pytest.skip(f"real sample data {data} is absent (it exists in CI beside the checkout, not in a fresh clone)")
    uploads = sys.modules["uploads"]
    for f in [
        data / "btcv" / "imagesTr" / "img0002.nii.gz",
        data / "btcv" / "labelsTr" / "label0001.nii.gz",
        data / "Task01_BrainTumour" / "imagesTr" / "BRATS_001.nii.gz",
        data / "chestxray14" / "images" / "00000211_000.png",
    ]:
        with open(f, "rb") as fh:
            assert uploads.check_upload(fh, f.name, uploads.IMAGE_EXTENSIONS) in (".nii.gz", ".png")
    with open(data / "btcv" / "imagesTr" / "img0001.nii.gz", "rb") as fh:
        raw = gzip.decompress(fh.read())
    assert sys.modules["uploads"].check_upload(io.BytesIO(raw), "img0001.nii", uploads.IMAGE_EXTENSIONS) == ".nii"
    with pytest.raises(uploads.UploadRefused, match="truncated"):
        uploads.check_upload(io.BytesIO(raw[:-100]), "img0001.nii", uploads.IMAGE_EXTENSIONS)


def test_temporary_files_of_a_request_are_removed_whatever_happens(tmp_path):
    """MONAI Label's endpoints write uploads and results to temporary files in worker threads and remove them only
    when the request succeeds: the guard gives each request its own folder and removes it after the answer."""
    written: list[str] = []

    async def failing_server(scope, receive, send):
        def endpoint():  # as FastAPI runs a sync endpoint: in a worker thread with the request's context
            f = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False)
            f.write(b"upload")
            f.close()
            written.append(f.name)

        await asyncio.to_thread(endpoint)
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"Internal Server Error"})

    guard = sg.Guard(failing_server, FakeView(), sg.Policy(tmpdir=str(tmp_path)))
    assert call(guard, "POST", f"/infer/{MODEL}", "image=img0001")[0] == 500
    assert len(written) == 1 and Path(written[0]).parent.parent == tmp_path  # the request's folder in the guard's
    assert list(tmp_path.iterdir()) == []
    assert Path(tempfile.gettempdir()) != Path(written[0]).parent  # outside a request, the usual folder
