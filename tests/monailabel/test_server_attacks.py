"""Attacks on a live MONAI Label server of scripts/serve_monailabel.sh, and a fuzzer over every route it has.

The reported attacks are replayed one by one (file writes through the datastore, code through ``bundle_path`` and
config expressions, reading server files through ``/infer``, a foreign ``Host``, requests that hung a task). Then the
fuzzer reads the server's own OpenAPI description, adds MONAI Label's routes that it leaves out, and sends to each
route and each of its fields traversal strings, absolute paths, config expressions, NUL bytes, wrong types, oversized
bodies and files that are not images, and a foreign ``Host`` and ``Origin`` to each route. It asserts no 5xx answer,
no file created or changed outside the server's log folder, no code run (marker files), and a server that still
answers. Everything is on 127.0.0.1 and bounded in count and time.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
from live_server import (
    BRATS,
    BTCV,
    CXR,
    CXR_IMAGE,
    LIVE,
    MAX_UPLOAD_MB,
    REPO,
    SHARED_DATA,
    VENV,
    Server,
    form,
    second_server,
)

pytestmark = LIVE
FUZZ_TIME_LIMIT_S = 600
FUZZ_MAX_REQUESTS = 4000


def _files(server: Server) -> dict[str, str]:
    """Every file under the server's folders (app, bundles, studies, its temporary folder) and a hash of its content
    (``POST /reload`` rewrites the app's baked configs with the same content: not a change)."""
    out = {}
    for dirpath, _, names in os.walk(server.root):
        for n in names:
            p = Path(dirpath, n)
            rel = str(p.relative_to(server.root))
            if p.is_symlink() or rel.startswith(_SERVER_OWN):
                continue
            try:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            except FileNotFoundError:
                continue
    return out


# what the server itself may change while it refuses requests: its logs, the datastore's own record and lock
_SERVER_OWN = ("app/logs/", "studies/datastore_v2.json", "studies/.lock", "server.log")


def _changed(server: Server, before: dict, after: dict) -> list[str]:
    """Files created, changed or removed between two :func:`_files` snapshots. The app's baked configs
    (``app/model/baked-*/<bundle>/configs/<file>``) may be rewritten, or caught mid-rewrite: MONAI Label rebuilds the
    app (after a training run, on ``POST /reload``) and the app bakes them again, from the bundle's own config files;
    any other file there still counts."""

    def rebuilt(name: str) -> bool:
        parts = name.split("/")
        baked = len(parts) == 6 and parts[:2] == ["app", "model"] and parts[2].startswith("baked-")
        return baked and parts[4] == "configs" and (server.bundles / parts[3] / "configs" / parts[5]).is_file()

    created = sorted(k for k in set(after) - set(before) if not rebuilt(k))
    altered = sorted(k for k in before if before[k] != after.get(k) and not rebuilt(k))
    return created + altered


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = b""
    for k, v in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode() + v.encode() + b"\r\n"
    for k, (name, data) in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n\r\n'
        body += head.encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _json(params: object) -> tuple[bytes, dict]:
    return json.dumps(params).encode(), {"Content-Type": "application/json"}


def _label(image: Path) -> bytes:
    ref = nib.load(image)
    return gzip.compress(nib.Nifti1Image(np.zeros(ref.shape[:3], np.uint8), ref.affine).to_bytes())


def _plant(folder: Path, marker: Path) -> None:
    """A ``sitecustomize.py`` in ``folder`` that writes ``marker`` when any Python process imports it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")


def _assert_no_code_ran(server: Server, marker: Path) -> None:
    """No marker, and no sitecustomize/usercustomize/.pth on the paths a training process of the server imports."""
    time.sleep(2)  # anything still running that could write it
    assert not marker.exists(), "code sent in a request ran in the server"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(server.app), *map(str, server.bundles.iterdir())])}
    probe = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", "import sys; print('sitecustomize' in sys.modules)"],
        cwd=server.app,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not marker.exists(), "a file the server wrote runs as code in a new Python process"
    assert probe.returncode == 0


def _train_tasks(server: Server) -> list[dict]:
    status, _, answer = server.raw("GET", "/train/?all=true")
    return json.loads(answer) if status == 200 else []


def test_reported_attacks_are_refused(server, tmp_path):
    marker = tmp_path / "marker"
    before, tasks = _files(server), _train_tasks(server)
    ct = server.studies / "img0001.nii.gz"
    sitecustomize = f"open({str(marker)!r}, 'w').write('ran')\n".encode()

    # file write anywhere through MONAI Label's datastore: an image id or a label tag with ../
    body, headers = _multipart({}, {"file": ("x.nii.gz", ct.read_bytes())})
    status, _, answer = server.raw("PUT", "/datastore/image?image=../app/sitecustomize", body, headers)
    assert status == 422 and b"'image'" in answer
    body, headers = _multipart({}, {"file": ("sitecustomize.py", sitecustomize)})
    assert server.raw("PUT", "/datastore/image", body, headers)[0] == 415
    body, headers = _multipart({}, {"label": ("img0001.nii.gz", _label(ct))})
    status, _, answer = server.raw("PUT", "/datastore/label?image=img0001&tag=../../app", body, headers)
    assert status == 422 and b"'tag'" in answer

    # code through bundle_path: MONAI Label kept a client's bundle_path when the body's model was not the route's
    planted = tmp_path / "planted"
    _plant(planted, marker)
    for params, field in [
        ({"model": "nope", "bundle_path": str(planted)}, b"'model'"),
        ({"bundle_path": str(planted), "max_epochs": 1}, b"bundle_path"),
        ({"max_epochs": f"$__import__('pathlib').Path({str(marker)!r}).write_text('ran') and 1"}, b"max_epochs"),
        ({"max_epochs": 1, "pretrained": "false"}, b"pretrained"),
        ({"max_epochs": 1, "model_filename": "../../x.pt"}, b"model_filename"),
        ({"max_epochs": 1, "train#trainer#max_epochs": 1}, b"train#trainer#max_epochs"),
        ({"gpus": "0\x00"}, b"NUL"),
        ({"gpus": 0}, b"gpus"),
    ]:
        for query in ("", "?run_sync=true"):
            status, _, answer = server.raw("POST", f"/train/{BTCV}{query}", *_json(params))
            assert status == 422 and field in answer, (params, status, answer[:300])
    assert _train_tasks(server) == tasks  # no training task was started (none left SUBMITTED for ever)

    # /infer reads only datastore images: an absolute server path, a path out of the studies folder
    for image in (str(SHARED_DATA / "btcv" / "imagesTr" / "img0002.nii.gz"), "../studies/img0001", "/etc/passwd"):
        status, _, _ = server.raw("POST", f"/infer/{BTCV}?image={urllib.parse.quote(image)}&output=json")
        assert status == 404, image
    for params, field in [
        ("[1]", b"JSON object"),
        ("12", b"JSON object"),
        (json.dumps({"image": str(ct)}), b"set by the server"),
        (json.dumps({"device": "$__import__('os')"}), b"config syntax"),
        (json.dumps({"label_tag": "../../outside"}), b"label_tag"),
        (json.dumps({"model_filename": "../../../x.pt"}), b"model_filename"),
    ]:
        body, headers = form(params=params)
        status, _, answer = server.raw("POST", f"/infer/{BTCV}?image=img0001&output=json", body, headers)
        assert status == 422 and field in answer, (params, status, answer[:300])

    # the Host header (DNS rebinding): a foreign name gets nothing, neither a CT nor the weights
    for path in ("/datastore/image?image=img0001", f"/model/{BTCV}", "/info/"):
        status, _, answer = server.raw("GET", path, headers={"Host": "rebind.example:80"})
        assert status == 403 and len(answer) < 200, path

    # the datastore takes only images the bundles read, and no more than the upload limit
    for name, data, expected in [
        ("noise.nii.gz", np.random.default_rng(0).bytes(1 << 20), 415),
        ("photo.png", b"\xff\xd8\xff\xe0" + bytes(4096), 415),
        ("big.nii.gz", gzip.compress(bytes(16)) + bytes((MAX_UPLOAD_MB << 20) + 1), 413),
    ]:
        body, headers = _multipart({}, {"file": (name, data)})
        assert server.raw("PUT", "/datastore/image", body, headers)[0] == expected, name
    assert "noise" not in json.dumps(server.request("GET", "/datastore/?output=all"))

    _assert_no_code_ran(server, marker)
    assert _changed(server, before, _files(server)) == []


def test_requests_from_another_browser_origin_are_refused(server):
    evil = {"Origin": "http://evil.example"}
    preflight = {**evil, "Access-Control-Request-Method": "POST"}
    status, headers, _ = server.raw("OPTIONS", f"/train/{BTCV}", headers=preflight)
    assert status == 403 and headers.get("access-control-allow-origin") is None
    body, headers_ = form(params="{}")  # a form POST needs no preflight: refused as well
    status, headers, _ = server.raw("POST", f"/infer/{CXR}?image={CXR_IMAGE}&output=json", body, {**headers_, **evil})
    assert status == 403 and headers.get("access-control-allow-origin") is None
    own = {"Origin": server.url, "Access-Control-Request-Method": "POST"}  # the server's own origin still answers
    status, headers, _ = server.raw("OPTIONS", f"/train/{BTCV}", headers=own)
    assert status == 200 and headers.get("access-control-allow-origin") == server.url


def _settled(folder: Path, timeout_s: float = 20.0) -> list[str]:
    """The files and folders under ``folder`` once no request is being cleaned up (its ``request-*`` folders gone) and
    the listing stays the same for a second."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        now = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
        if now == last and not any(n.startswith("request-") for n in now):
            return now
        last = now
        time.sleep(1.0)
    return last or []


def test_failed_inference_leaves_no_temporary_files(server):
    private = [p for p in server.tmpdir.iterdir() if p.name.startswith("mae-monailabel.")]
    assert len(private) == 1, private  # the script's private temporary folder, removed when the server stops
    before = _settled(private[0])
    # a 3-D CT given to the 4-channel BraTS model: MONAI Label's inference fails inside the bundle
    status, _, _ = server.raw("POST", "/infer/brats_mae_segmentation?image=img0001&output=image")
    assert status >= 400
    body, headers = _multipart({}, {"file": ("x.nii.gz", b"\x1f\x8b" + bytes(64))})
    assert server.raw("PUT", "/datastore/image?image=x", body, headers)[0] == 415
    assert _settled(private[0]) == before


def _serve(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = ["bash", str(REPO / "scripts" / "serve_monailabel.sh"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_the_script_refuses_unsafe_dicomweb_starts(tmp_path):
    """A PACS as the datastore: the login only from a private file, no password in the URL, no plain http to
    another machine unless asked for. Each start is refused before anything runs (no server is needed)."""
    app = tmp_path / "app"
    shutil.copytree(REPO / "monailabel_app", app, ignore=shutil.ignore_patterns("__pycache__"))
    common = ("--app", str(app), "--bundles", str(REPO / "bundles"), "--port", "1")
    pacs = "http://127.0.0.1:1/dicom-web"
    credentials = tmp_path / "credentials"
    credentials.write_text("orthanc:Sup3rSecret\n")
    for mode in (0o644, 0o640, 0o604):
        credentials.chmod(mode)
        run = _serve("--studies", pacs, "--dicomweb_credentials", str(credentials), *common)
        assert run.returncode == 2 and "mode 0600" in run.stderr, (oct(mode), run.stderr)
    credentials.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(credentials)
    run = _serve("--studies", pacs, "--dicomweb_credentials", str(link), *common)
    assert run.returncode == 2 and "--dicomweb_credentials" in run.stderr
    run = _serve("--studies", pacs, "--dicomweb_credentials", str(tmp_path / "absent"), *common)
    assert run.returncode == 2 and "--dicomweb_credentials" in run.stderr
    for url, words in [
        ("http://orthanc:Sup3rSecret@127.0.0.1:1/dicom-web", "no user or password"),
        ("ftp://127.0.0.1/dicom-web", "http(s)"),
        ("file:///etc/passwd", "http(s)"),
        ("dicomweb://127.0.0.1/dicom-web", "http(s)"),
        ("http://10.1.2.3:8042/dicom-web", "--allow_insecure_dicomweb"),
        ("http://pacs.example/dicom-web", "in clear"),
        ("http://127.0.0.1:1/dicom-web?x=1", "query"),
    ]:
        run = _serve("--studies", url, *common)
        assert run.returncode == 2 and words in run.stderr, (url, run.stderr)
        assert "Sup3rSecret" not in run.stdout + run.stderr
    run = _serve("--studies", str(tmp_path / "studies"), "--dicomweb_credentials", str(credentials), *common)
    assert run.returncode == 2 and "go with --studies <DICOMweb URL>" in run.stderr
    for var in ("MONAI_LABEL_DICOMWEB_PASSWORD", "MONAI_LABEL_DATASTORE_PASSWORD", "MONAI_LABEL_DATASTORE"):
        run = _serve("--studies", pacs, *common, env={**os.environ, var: "x"})
        assert run.returncode == 2 and var in run.stderr and "--dicomweb_credentials" in run.stderr
    assert not (tmp_path / "studies").exists() and not list(app.glob("logs/*"))  # nothing started


def test_the_script_refuses_unsafe_starts(server, tmp_path):
    app = tmp_path / "app"
    shutil.copytree(REPO / "monailabel_app", app, ignore=shutil.ignore_patterns("__pycache__"))
    common = ("--app", str(app), "--bundles", str(server.bundles), "--port", "1")
    run = _serve("--studies", str(tmp_path / "studies"), "--host", "0.0.0.0", *common)
    assert run.returncode == 2 and "--token_file" in run.stderr  # reachable from other machines without a login
    run = _serve("--studies", str(app / "studies"), *common)  # the datastore inside the app folder
    assert run.returncode == 2 and "the app folder" in run.stderr and "overlap" in run.stderr
    run = _serve("--studies", str(server.bundles / BTCV / "uploads"), *common)
    assert run.returncode == 2 and "the bundles folder" in run.stderr
    run = _serve("--studies", str(tmp_path / "studies"), "--uvicorn_app", "monailabel.app:app", *common)
    assert run.returncode == 2 and "guard" in run.stderr
    run = _serve("--studies", str(tmp_path / "studies"), "--cors", "javascript:alert(1)", *common)
    assert run.returncode == 2 and "--cors" in run.stderr
    token = tmp_path / "new" / "token"  # a new token file: written with mode 0600 before anything else is checked
    token.parent.mkdir()
    run = _serve("--studies", str(app / "studies"), "--token_file", str(token), *common)
    assert run.returncode == 2 and token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) >= 32


def test_a_server_with_a_token(server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("k" * 43 + "\n")
    token_file.chmod(0o644)
    args = ("--token_file", str(token_file), "--models", CXR)
    run = _serve("--studies", str(tmp_path / "studies"), "--port", "1", *args)
    assert run.returncode == 2 and "mode 0600" in run.stderr  # a token others may read is refused
    token_file.chmod(0o600)
    secured = second_server(tmp_path / "s", server, CXR, args, {"Authorization": f"Bearer {'k' * 43}"})
    try:
        assert secured.raw("GET", "/info/", headers={"Authorization": ""})[0] == 401
        assert secured.raw("GET", "/info/", headers={"Authorization": "Bearer " + "x" * 43})[0] == 401
        assert secured.raw("GET", f"/model/{CXR}", headers={"Authorization": ""})[0] == 401
        assert secured.raw("GET", "/health", headers={"Authorization": ""})[0] == 200
        assert set(secured.request("GET", "/info/")["models"]) == {CXR}
    finally:
        secured.stop()


# ---- the fuzzer ---------------------------------------------------------------------------------------------------

# MONAI Label's routes that its OpenAPI description leaves out (include_in_schema=False), with their fields
HIDDEN = [
    ("POST", "/reload", {}),
    ("PUT", "/datastore/", {"query": ["image"], "form": ["params"], "files": ["file"]}),
    ("DELETE", "/datastore/", {"query": ["id"]}),
    ("PUT", "/datastore/updatelabelinfo", {"query": ["label", "tag"], "form": ["params"]}),
    ("POST", "/train/", {"query": ["run_sync"], "json": True}),
    ("POST", "/scoring/", {"query": ["run_sync"], "json": True}),
    ("POST", "/infer/wsi/{model}", {"query": ["image", "session_id", "output"], "json": True}),
    ("GET", "/ohif/{path}", {}),
    ("GET", "/proxy/dicom/{path}", {}),
    ("POST", "/proxy/dicom/stow/{path}", {"json": True}),
    ("GET", "/static/{path}", {}),
    ("GET", "/login/", {}),
    ("POST", "/login/token", {"form": ["username", "password"]}),
]
TEXT_PAYLOADS = [
    "../../../../../tmp/mae_fuzz",
    "..%2F..%2F..%2Ftmp%2Fmae_fuzz",
    "/etc/passwd",
    "/tmp/mae_fuzz/x.nii.gz",
    "..",
    ".",
    "",
    "\x00",
    "x\x00.nii.gz",
    "a" * 5000,
    "@train#trainer",
    "%configs/train.yaml",
    "-1",
    "1e400",
    "NaN",
    "true\r\nX-Injected: 1",
    "<script>",
    "img0001/../../app/main",
    "x:y",
    "SHA1:00",
    "9" * 30,
]
JSON_PAYLOADS = [123, -1, 1e308, None, True, [], {}, ["../x"], {"$x": 1}, "x" * 5000]


def _routes(server: Server) -> list[tuple[str, str, dict]]:
    spec = server.request("GET", "/openapi.json")
    routes = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            fields = {"query": [], "path": [], "form": [], "files": [], "json": False}
            for p in op.get("parameters", []):
                fields["path" if p["in"] == "path" else "query"].append(p["name"])
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                fields["json"] = True
            for ctype, media in content.items():
                if ctype.startswith("multipart") or ctype.endswith("urlencoded"):
                    ref = media["schema"].get("$ref", "")
                    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else media["schema"]
                    for name, prop in schema.get("properties", {}).items():
                        text = json.dumps(prop)
                        binary = "binary" in text or "octet-stream" in text
                        fields["files" if binary else "form"].append(name)
            routes.append((method.upper(), path, fields))
    assert len(routes) >= 30, f"the OpenAPI description lists {len(routes)} routes"
    empty = {"query": [], "path": [], "form": [], "files": [], "json": False}
    return routes + [(m, p, {**empty, **f}) for m, p, f in HIDDEN]


def _fill(path: str) -> str:
    values = {"model": BTCV, "strategy": "random", "method": "x", "session_id": "x", "path": "x"}
    for name, value in values.items():
        path = path.replace("{" + name + "}", value).replace("{" + name + ":path}", value)
    return path


def test_fuzz_every_route(server, tmp_path):
    marker = tmp_path / "marker"
    payload_marker = f"$__import__('pathlib').Path({str(marker)!r}).write_text('ran')"
    before = _files(server)
    outside = Path("/tmp/mae_fuzz")
    assert not outside.exists()
    start, sent, failures = time.monotonic(), 0, []

    def send(method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> None:
        nonlocal sent
        sent += 1
        assert sent <= FUZZ_MAX_REQUESTS and time.monotonic() - start < FUZZ_TIME_LIMIT_S, "fuzzer over its bounds"
        status, _, answer = server.raw(method, path, body, headers)
        if status >= 500:
            failures.append(f"{method} {path[:160]} {(body or b'')[:120]!r}: {status} {answer[:200]!r}")

    image = (server.studies / "img0001.nii.gz").read_bytes()
    for method, template, fields in _routes(server):
        path = _fill(template)
        # every route: a foreign Host and a foreign Origin are refused before anything else
        for headers in ({"Host": "evil.example"}, {"Origin": "http://evil.example"}):
            status, _, _ = server.raw(method, path, None, headers)
            assert status == 403, (method, path, headers, status)
        for name in fields["path"]:
            for value in TEXT_PAYLOADS + [payload_marker]:
                quoted = urllib.parse.quote(value, safe="")
                send(method, _fill(template.replace("{" + name + "}", quoted)))
        for name in fields["query"]:
            for value in TEXT_PAYLOADS + [payload_marker]:
                send(method, f"{path}?{urllib.parse.urlencode({name: value})}")
            send(method, f"{path}?{name}=a&{name}=b")
        for name in fields["form"]:
            for value in TEXT_PAYLOADS + [payload_marker] + [json.dumps(v) for v in JSON_PAYLOADS]:
                send(method, path, *_multipart({name: value}, {}))
        for name in fields["files"]:
            for filename, data in [
                ("sitecustomize.py", f"open({str(marker)!r}, 'w')".encode()),
                ("../../../../tmp/mae_fuzz.nii.gz", image),
                ("x.pth", b"import os"),
                ("noise.nii.gz", os.urandom(1 << 16)),
                ("x.png", b"\xff\xd8\xff" + os.urandom(512)),
                ("\x00.nii.gz", image),
                ("big.nii.gz", image + bytes((MAX_UPLOAD_MB << 20) + 1)),
            ]:
                send(method, path, *_multipart({}, {name: (filename, data)}))
        if fields["json"] or method in ("POST", "PUT"):
            for value in JSON_PAYLOADS + [
                {"model": "nope", "bundle_path": str(tmp_path)},
                {"gpus": "0\x00"},
                {"gpus": 7},
                {"max_epochs": payload_marker},
                {"image": "/etc/passwd"},
                {"strategy": "../x"},
            ]:
                send(method, path, *_json(value))
            send(method, path, b"{not json", {"Content-Type": "application/json"})
            send(method, path, b"x" * (2 << 20), {"Content-Type": "application/json"})

    assert failures == [], f"{len(failures)} of {sent} requests got a 5xx:\n" + "\n".join(failures[:30])
    assert sent > 500, sent
    assert server.request("GET", "/info/")["models"], "the server stopped answering"
    assert not outside.exists() and not Path("/tmp/mae_fuzz.nii.gz").exists()
    _assert_no_code_ran(server, marker)
    assert _changed(server, before, _files(server)) == [], "files changed outside the server's logs"


def test_every_documented_value_answers(server):
    """Valid requests, not attacks: each output of each served model, and each read-only route with the documented
    values of its parameters, answers without a server error (an image from a classifier was a 500)."""
    spec = server.request("GET", "/openapi.json")
    outputs = next(p for p in spec["paths"]["/infer/{model}"]["post"]["parameters"] if p["name"] == "output")
    enum = spec["components"]["schemas"][outputs["schema"]["anyOf"][0]["$ref"].rsplit("/", 1)[-1]]["enum"]
    images = {BTCV: "img0001", BRATS: "BRATS_001", CXR: CXR_IMAGE}
    for model in server.request("GET", "/info/")["models"]:
        for output in enum:
            status, _, answer = server.raw("POST", f"/infer/{model}?image={images[model]}&output={output}")
            assert status < 500, (model, output, status, answer[:300])
    filled = {"image": "img0001", "label": "img0001", "tag": "final", "model": BTCV}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            if method not in ("get", "head"):
                continue
            query = {
                p["name"]: filled[p["name"]]
                for p in op.get("parameters", [])
                if p["in"] == "query" and p.get("required")
            }
            url = path.replace("{model}", BTCV) + ("?" + urllib.parse.urlencode(query) if query else "")
            if "{" in url:
                continue
            status, _, answer = server.raw(method.upper(), url)
            assert status < 500, (method, url, status, answer[:300])
