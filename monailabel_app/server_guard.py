"""The one guard in front of every route of MONAI Label's server: nothing reaches MONAI Label unless allowed here.

``scripts/serve_monailabel.sh`` starts MONAI Label with ``--uvicorn_app guarded_server:app`` (a public option of
``monailabel start_server``): this ASGI app sees every HTTP request first and passes it on only when

1. its ``Host`` header names this server (:attr:`Policy.hosts`: the loopback names and the addresses the script was
   told; a foreign name is the server side of DNS rebinding) and its ``Origin`` header, when there is one, is one of
   :attr:`Policy.origins` (MONAI Label itself answers every origin's CORS preflight, with credentials);
2. it carries the server's token (``Authorization: Bearer <token>``) when :attr:`Policy.token` is set, on every route
   but ``GET /health`` (answered here) and CORS preflights;
3. its method and path are one of :data:`ROUTES`, MONAI Label's own routes included (datastore, model, infer, train,
   batch inference, active learning, scoring, logs, OHIF, docs); anything else gets 404. Routes this app has no use
   for, and which write or read files by client-given names, are refused with 403: uploading or deleting weights
   (``PUT``/``DELETE /model``), sessions (they store uploads under client file names), MONAI Label's DICOMweb proxy
   (it forwards any client path, method and header to the PACS: ``GET /proxy/dicom/{qido|wado}/...`` is answered
   here instead, read-only and checked, ``dicomweb_proxy.py``, when the datastore is a PACS), the dataset archive (a
   zip of the whole datastore written per request and never removed) and whole-slide inference;
4. every query parameter is known to its route and checked: image ids and label tags of the datastore exist
   (:meth:`ServerView.has_image`), new image ids and tags come from :data:`NAME` (letters, digits, ``_``, ``.``, ``-``;
   no path), enumerations and numbers are in range, duplicates are refused. When the datastore is a PACS
   (:meth:`ServerView.dicomweb`), image ids are Series Instance UIDs (digits and dots, at most 64 characters), images
   are neither uploaded nor deleted here (403: the PACS holds them), and ``output=dicom_seg`` is served (MONAI Label
   converts with dcmqi: only where dcmqi is installed, :meth:`ServerView.dicom_seg_writer`; a folder datastore 422);
5. its body fits :attr:`Policy.max_upload` (file uploads) or :data:`MAX_FORM` (anything else), else 413; JSON bodies
   and the ``params``/``info`` form fields are JSON objects (else 422) whose fields pass the task checks of
   ``request_checks.py`` (train and inference) or the route's list; a body ``model`` must be the route's, and the fields
   MONAI Label fills in itself (``bundle_path``, which it puts on the training process's ``PYTHONPATH``, ``image``,
   ``label``, ``session``, ...) are refused; ``/infer`` takes datastore ids only (no file upload: upload the image to
   the datastore first); ``label_info`` (a DICOM SEG's segment names, in infer and save-label ``params``) is a list of
   checked objects (``request_checks.check_label_info``);
6. an uploaded image or label is a file the bundles read, by its bytes (``uploads.py``; 415 otherwise).

Each request that passes is served with its own temporary folder (``tempfile.gettempdir()`` in the threads that serve
it), removed when the answer has been sent, whatever happened: MONAI Label removes its temporary copies of uploads
and results only when a request succeeds.

A refusal is answered as FastAPI answers errors (``{"detail": "..."}``), naming the field. The request body, read to
check it, is handed on to MONAI Label unchanged.

This module needs Starlette (MONAI Label's web framework) but not MONAI Label: what it checks against is a
:class:`ServerView`; ``guarded_server.py`` builds the real one from the running app.
"""

from __future__ import annotations

import contextvars
import hmac
import json
import math
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dicomweb_access import MAX_UID, is_uid
from dicomweb_proxy import PacsReader, ProxyRefused, check_accept, check_query, upstream_path
from request_checks import (
    RequestRefused,
    TaskFacts,
    check_infer_request,
    check_label_info,
    check_train_request,
    refuse_config_syntax,
)
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from uploads import IMAGE_EXTENSIONS, LABEL_EXTENSIONS, UploadRefused, check_upload, extension_of

__all__ = ["MAX_FORM", "NAME", "ROUTES", "Guard", "Policy", "Refusal", "ServerView"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")  # a new image id or label tag: no path, not hidden
MAX_FORM = 1 << 20  # bodies that carry no file: 1 MiB
DRAIN = 64 << 20  # an oversized body is read (and dropped) up to this much more before the 413
MAX_TEXT = 4096
HEALTH = "/health"
ASGI = Callable[..., Awaitable[None]]


class Refusal(Exception):
    """A request the guard answers itself, with ``status`` and a message naming the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServerView(Protocol):
    """What the running MONAI Label app serves (``guarded_server.MonaiLabelView``)."""

    def models(self) -> Iterable[str]: ...  # inference models
    def classifiers(self) -> Iterable[str]: ...  # the inference models whose result is a vector, not an image
    def trainers(self) -> Iterable[str]: ...
    def strategies(self) -> Iterable[str]: ...
    def scoring_methods(self) -> Iterable[str]: ...
    def has_image(self, image_id: str) -> bool: ...
    def has_label(self, image_id: str, tag: str) -> bool: ...
    def facts(self, model: str) -> TaskFacts: ...
    def dicomweb(self) -> bool: ...  # the datastore is a PACS (DICOMweb): image ids are Series Instance UIDs
    def dicom_seg_writer(self) -> bool: ...  # dcmqi's itkimage2segimage is there (MONAI Label's output=dicom_seg)
    def pacs_reader(self) -> PacsReader | None: ...  # the viewer's read-only way into the PACS (None: no PACS)


@dataclass
class Policy:
    """What the guard allows: ``hosts`` (names in the ``Host`` header, any port), browser ``origins``, the bearer
    ``token`` ('' for none), the largest upload in bytes, and whether MONAI Label's own login routes are served."""

    hosts: frozenset[str] = frozenset({"127.0.0.1", "localhost", "::1"})
    origins: frozenset[str] = frozenset()
    token: str = ""
    max_upload: int = 1 << 30
    monai_auth: bool = False
    tmpdir: str | None = None


@dataclass
class Ctx:
    """One request as the route checks see it."""

    method: str
    path: dict[str, str]
    query: dict[str, str]
    content_type: str
    view: ServerView
    policy: Policy
    body: Any = None  # a SpooledTemporaryFile
    receive: Any = None
    forms: list[FormData] = field(default_factory=list)
    answer: Response | None = None  # set by a check that answers the request itself (the DICOMweb proxy)
    root_path: str = ""

    async def form(self) -> FormData:
        """The body parsed as a form (multipart or url-encoded); its files are closed after the request."""
        self.body.seek(0)
        request = Request({"type": "http", "method": self.method, "headers": self._headers}, _replay(self.body, None))
        try:
            form = await request.form(max_files=2, max_fields=16, max_part_size=MAX_FORM)
        except Exception as e:  # Starlette's MultiPartException, a malformed body
            raise Refusal(422, f"The request body is not a well-formed form: {e}") from None
        self.forms.append(form)
        return form

    _headers: list = field(default_factory=list)


# ---- values -------------------------------------------------------------------------------------------------------


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT or "\x00" in value:
        raise Refusal(422, f"Field '{name}' must be a string of at most {MAX_TEXT} characters without NUL.")
    return value


def _new_name(value: Any, name: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise Refusal(
            422,
            f"Field '{name}' must be a name of letters, digits, '_', '.' and '-' (no path, not starting with "
            f"'.'); got {str(value)[:80]!r}.",
        )
    return value


def _image(ctx: Ctx, value: str, name: str) -> str:
    _text(value, name)
    if ctx.view.dicomweb() and not is_uid(value):
        raise Refusal(
            422,
            f"Field '{name}' must be a Series Instance UID (digits and dots, at most {MAX_UID} characters) on this "
            f"server (its datastore is a PACS); got {value[:80]!r}.",
        )
    if not ctx.view.has_image(value):
        raise Refusal(404, f"Field '{name}': no image '{value[:80]}' in the datastore (ids, not paths).")
    return value


def _bool(value: str, name: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise Refusal(422, f"Field '{name}' must be true or false; got {value[:40]!r}.")
    return value.lower() in ("true", "1")


def _int(low: int, high: int) -> Callable[[str, str], int]:
    def check(value: str, name: str) -> int:
        if not re.fullmatch(r"-?\d{1,12}", value) or not low <= int(value) <= high:
            raise Refusal(422, f"Field '{name}' must be an integer in [{low}, {high}]; got {value[:40]!r}.")
        return int(value)

    return check


def _enum(*choices: str) -> Callable[[str, str], str]:
    def check(value: str, name: str) -> str:
        if value not in choices:
            raise Refusal(422, f"Field '{name}' must be one of {list(choices)}; got {value[:40]!r}.")
        return value

    return check


def _json_object(raw: Any, name: str) -> dict[str, Any]:
    if raw in (None, b"", ""):
        return {}
    try:
        value = json.loads(raw, parse_constant=lambda c: c)  # NaN and Infinity stay strings: refused below
    except (ValueError, UnicodeDecodeError) as e:
        raise Refusal(422, f"Field '{name}' is not JSON: {e}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Refusal(422, f"Field '{name}' must be a JSON object; got {type(value).__name__}.")
    try:
        refuse_config_syntax(value, name)
    except RequestRefused as e:
        raise Refusal(422, str(e)) from None
    _finite(value, name)
    return value


def _finite(value: Any, name: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise Refusal(422, f"Field '{name}' is not a finite number.")
    if isinstance(value, str) and "\x00" in value:
        raise Refusal(422, f"Field '{name}' holds a NUL character.")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(k, f"{name} (key)")
            _finite(v, f"{name}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, f"{name}[{i}]")


# ---- route checks -------------------------------------------------------------------------------------------------

QueryRules = Mapping[str, Callable[[Ctx, str, str], Any]]


def _q(check: Callable[[str, str], Any]) -> Callable[[Ctx, str, str], Any]:
    return lambda ctx, value, name: check(value, name)


def _check_query(ctx: Ctx, rules: QueryRules, required: Iterable[str] = ()) -> None:
    unknown = sorted(set(ctx.query) - set(rules))
    if unknown:
        raise Refusal(422, f"Unknown query parameter(s) {unknown}; this route takes {sorted(rules)}.")
    for name in required:
        if name not in ctx.query:
            raise Refusal(422, f"Query parameter '{name}' is required.")
    for name, value in ctx.query.items():
        rules[name](ctx, value, name)


def _no_body(ctx: Ctx) -> None:
    if ctx.body.tell():
        raise Refusal(422, "This route takes no request body.")


async def _json_body(ctx: Ctx) -> dict[str, Any]:
    ctx.body.seek(0)
    return _json_object(ctx.body.read(), "body")


def _known(value: str, names: Iterable[str], what: str) -> str:
    if value not in set(names):
        raise Refusal(404, f"No {what} '{value[:80]}' on this server.")
    return value


_SERVER_FIELDS = ("bundle_path", "image", "images", "label", "session", "_id", "_image_id", "local_rank")


def _task_fields(ctx: Ctx, params: dict[str, Any], model: str, check: Callable[..., Any], what: str) -> None:
    """``params`` of a train or infer request for ``model``: no field the server fills in, ``model`` the route's."""
    if "model" in params and params["model"] != model:
        raise Refusal(422, f"Field 'model' ({str(params['model'])[:80]!r}) must be the route's model '{model}'.")
    refused = sorted(k for k in params if k in _SERVER_FIELDS)
    if refused:
        raise Refusal(422, f"Field(s) {refused} of a {what} request are set by the server, not by a client.")
    try:
        check(params, ctx.view.facts(model))
    except RequestRefused as e:
        raise Refusal(422, str(e)) from None


async def _form_fields(ctx: Ctx, fields: Mapping[str, str], files: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """The form's text fields (``fields``: name -> 'json' or 'text') and files (name -> allowed extensions), checked;
    a file must be there when ``files`` names it."""
    if not ctx.body.tell():
        if files:
            raise Refusal(422, f"The request needs a multipart form with the file field(s) {sorted(files)}.")
        return {}
    form = await ctx.form()
    unknown = sorted(set(form.keys()) - set(fields) - set(files))
    if unknown:
        raise Refusal(422, f"Unknown form field(s) {unknown}; this route takes {sorted({*fields, *files})}.")
    out: dict[str, Any] = {}
    for name, kind in fields.items():
        values = form.getlist(name)
        if len(values) > 1 or any(isinstance(v, UploadFile) for v in values):
            raise Refusal(422, f"Form field '{name}' must be given once, as text.")
        if values:
            out[name] = _json_object(values[0], name) if kind == "json" else _text(values[0], name)
    for name, allowed in files.items():
        values = form.getlist(name)
        if len(values) != 1 or not isinstance(values[0], UploadFile):
            raise Refusal(422, f"Form field '{name}' must be one uploaded file.")
        upload = values[0]
        filename = upload.filename or ""
        if len(filename) > 255 or any(c in filename for c in "/\\\x00") or filename.startswith("."):
            raise Refusal(422, f"Form field '{name}': the file name {filename[:80]!r} must be a plain name, no path.")
        try:
            out[name] = check_upload(upload.file, filename, allowed)
        except UploadRefused as e:
            raise Refusal(e.status, str(e)) from None
        out[f"{name}_filename"] = filename
    return out


async def _info(ctx: Ctx) -> None:
    _check_query(ctx, {})
    _no_body(ctx)


def _static_path(ctx: Ctx) -> None:
    parts = ctx.path["path"].split("/")
    if any(p in ("", ".", "..") or not re.fullmatch(r"[A-Za-z0-9_.\-]+", p) for p in parts) and ctx.path["path"]:
        raise Refusal(404, f"No such file: {ctx.path['path'][:80]!r}.")


async def _static(ctx: Ctx) -> None:
    _static_path(ctx)  # its query (a viewer's study UIDs, a cache key) is read by the page, not by the server
    _no_body(ctx)


async def _refuse(ctx: Ctx, why: str) -> None:
    raise Refusal(403, why)


def _refused(why: str) -> Callable[[Ctx], Awaitable[None]]:
    return lambda ctx: _refuse(ctx, why)


async def _dicom_proxy(ctx: Ctx) -> None:
    reader = ctx.view.pacs_reader()
    if reader is None:
        raise Refusal(403, _NO_PROXY)
    try:
        path, search = upstream_path(ctx.path["op"], ctx.path["path"])
        query = check_query(ctx.query, search)
        accept = check_accept(dict(ctx._headers).get(b"accept", b"").decode("latin-1"))
        _no_body(ctx)
        answer = await run_in_threadpool(reader.get, path, search, query, accept, f"{ctx.root_path}/proxy/dicom/wado")
    except ProxyRefused as e:
        raise Refusal(e.status, str(e)) from None
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    if answer.stream is not None and ctx.method == "GET":  # pixel data as it arrives (iterated in worker threads)
        ctx.answer = StreamingResponse(answer.stream, answer.status, headers, answer.content_type)
        return
    if answer.stream is not None:  # HEAD: no body
        answer.stream.close()
    ctx.answer = Response(answer.body if ctx.method == "GET" else b"", answer.status, headers, answer.content_type)


async def _model_download(ctx: Ctx) -> None:
    _known(ctx.path["model"], ctx.view.models(), "model")
    _check_query(ctx, {})
    _no_body(ctx)


_NO_DICOM_SEG_WRITER = (
    "output=dicom_seg: MONAI Label writes it with dcmqi's itkimage2segimage, which this server does not have; save "
    "the label instead (PUT /datastore/label?image=<id>&tag=final stores it in the PACS as a DICOM SEG)."
)


def _dicom_seg_output(ctx: Ctx, params: dict[str, Any]) -> None:
    """``output=dicom_seg``: MONAI Label converts the result to a DICOM SEG of the image's series (its datastore must
    be DICOMweb, else 500) with dcmqi, naming the segments from ``params.label_info`` (absent: 404)."""
    if not ctx.view.dicomweb():
        raise Refusal(422, "output=dicom_seg needs a DICOMweb datastore; this server's datastore is a folder.")
    if not ctx.view.dicom_seg_writer():
        raise Refusal(422, _NO_DICOM_SEG_WRITER)
    if not params.get("label_info"):
        raise Refusal(422, "output=dicom_seg needs params.label_info: the segments, [{'name': ..., 'idx': ...}].")


async def _infer(ctx: Ctx) -> None:
    model = _known(ctx.path["model"], ctx.view.models(), "model")
    # no session_id: this server keeps no sessions; no image from a classifier (MONAI Label answers 500: there is no
    # result image); dicom_seg only from a DICOMweb datastore (_dicom_seg_output)
    outputs = ("json", "all") if model in set(ctx.view.classifiers()) else ("image", "json", "all", "dicom_seg")
    _check_query(ctx, {"image": _image, "output": _q(_enum(*outputs))}, required=("image",))
    form = await _form_fields(ctx, {"params": "json"}, {})
    params = form.get("params", {})
    _task_fields(ctx, params, model, check_infer_request, "inference")
    if ctx.query.get("output") == "dicom_seg":
        _dicom_seg_output(ctx, params)


async def _batch_infer(ctx: Ctx) -> None:
    model = _known(ctx.path["model"], ctx.view.models(), "model")
    _check_query(ctx, {"images": _q(_enum("all", "labeled", "unlabeled")), "run_sync": _q(_bool)})
    _task_fields(ctx, await _json_body(ctx), model, check_infer_request, "inference")


async def _task_status(ctx: Ctx) -> None:
    _check_query(ctx, {"all": _q(_bool), "check_if_running": _q(_bool)})
    _no_body(ctx)


async def _no_params(ctx: Ctx) -> None:
    _check_query(ctx, {})
    _no_body(ctx)


async def _train_all(ctx: Ctx) -> None:
    _check_query(ctx, {"run_sync": _q(_bool)})
    if await _json_body(ctx):
        raise Refusal(422, "POST /train/ takes no parameters here: give them per model, to /train/<model>.")


async def _train(ctx: Ctx) -> None:
    model = _known(ctx.path["model"], ctx.view.trainers(), "trainer")
    _check_query(ctx, {"run_sync": _q(_bool), "enqueue": _q(_bool)})
    _task_fields(ctx, await _json_body(ctx), model, check_train_request, "train")


async def _activelearning(ctx: Ctx) -> None:
    _known(ctx.path["strategy"], ctx.view.strategies(), "strategy")
    _check_query(ctx, {})
    params = await _json_body(ctx)
    allowed = {"client_id": _text, "label_tag": _new_name}
    for name, value in params.items():
        if name not in allowed:
            raise Refusal(422, f"Unknown active learning field '{name}'; this server takes {sorted(allowed)}.")
        allowed[name](value, name)


async def _scoring_all(ctx: Ctx) -> None:
    _check_query(ctx, {"run_sync": _q(_bool)})
    if await _json_body(ctx):
        raise Refusal(422, "Scoring takes no parameters on this server.")


async def _scoring(ctx: Ctx) -> None:
    _known(ctx.path["method"], ctx.view.scoring_methods(), "scoring method")
    await _scoring_all(ctx)


async def _datastore(ctx: Ctx) -> None:
    _check_query(ctx, {"output": _q(_enum("stats", "train", "all"))})
    _no_body(ctx)


_PACS_IMAGES = "This server's images are the series of its PACS (DICOMweb): store or delete them there."


async def _add_image(ctx: Ctx) -> None:
    if ctx.view.dicomweb():
        raise Refusal(403, _PACS_IMAGES)
    _check_query(ctx, {"image": _q(_new_name)})
    form = await _form_fields(ctx, {"params": "json"}, {"file": IMAGE_EXTENSIONS})
    image = ctx.query.get("image")
    if image is None:  # MONAI Label names it after the file: the file name without its extension
        name = form["file_filename"]
        image = _new_name(name[: -len(extension_of(name, IMAGE_EXTENSIONS))], "file (name)")
    if ctx.view.has_image(image):
        raise Refusal(409, f"Image '{image}' is already in the datastore: delete it first to replace it.")


def _image_query(name: str = "image") -> QueryRules:
    return {name: _image}


def _check_sum(value: str, name: str) -> str:
    if not re.fullmatch(r"((SHA256|SHA512|MD5):)?[0-9a-fA-F]{32,128}", value):
        raise Refusal(422, f"Field '{name}' must be [SHA256:|SHA512:|MD5:]<hex digest>; got {value[:80]!r}.")
    return value


async def _image_read(ctx: Ctx) -> None:
    _check_query(ctx, {"image": _image, "check_sum": _q(_check_sum)}, required=("image",))
    _no_body(ctx)


async def _image_info(ctx: Ctx) -> None:
    _check_query(ctx, _image_query(), required=("image",))
    _no_body(ctx)


async def _image_remove(ctx: Ctx) -> None:
    if ctx.view.dicomweb():
        raise Refusal(403, _PACS_IMAGES)
    _check_query(ctx, _image_query("id"), required=("id",))
    _no_body(ctx)


async def _image_info_put(ctx: Ctx) -> None:
    _check_query(ctx, _image_query(), required=("image",))
    await _form_fields(ctx, {"info": "json"}, {})


async def _save_label(ctx: Ctx) -> None:
    _check_query(ctx, {"image": _image, "tag": _q(_new_name)}, required=("image",))
    form = await _form_fields(ctx, {"params": "json"}, {"label": LABEL_EXTENSIONS})
    params = form.get("params", {})
    if "label_info" in params:  # the segments' names of a DICOM SEG (a PACS datastore)
        try:
            check_label_info(params["label_info"], "params.label_info")
        except RequestRefused as e:
            raise Refusal(422, str(e)) from None
    if "model" in params:  # the model whose labels name the segments
        _known(_text(params["model"], "params.model"), ctx.view.models(), "model")


def _label(ctx: Ctx, id_field: str) -> None:
    _check_query(ctx, {id_field: _image, "tag": _q(_new_name)}, required=(id_field, "tag"))
    if not ctx.view.has_label(ctx.query[id_field], ctx.query["tag"]):
        raise Refusal(404, f"No label '{ctx.query['tag']}' of image '{ctx.query[id_field]}' in the datastore.")


async def _label_read(ctx: Ctx, id_field: str = "label") -> None:
    _label(ctx, id_field)
    _no_body(ctx)


async def _label_info_put(ctx: Ctx, form_field: str = "info") -> None:
    _label(ctx, "label")
    await _form_fields(ctx, {form_field: "json"}, {})


async def _logs(ctx: Ctx) -> None:
    rules = {"lines": _q(_int(0, 100_000)), "html": _q(_bool), "text": _q(_bool), "refresh": _q(_int(0, 3600))}
    _check_query(ctx, rules)
    _no_body(ctx)


async def _login(ctx: Ctx) -> None:
    if not ctx.policy.monai_auth:
        raise Refusal(404, "MONAI Label's login is not on (MONAI_LABEL_AUTH_ENABLE).")
    _check_query(ctx, {})
    if ctx.method == "POST":
        await _form_fields(
            ctx, {k: "text" for k in ("grant_type", "username", "password", "scope", "client_id", "client_secret")}, {}
        )
    else:
        _no_body(ctx)


@dataclass(frozen=True)
class Route:
    """Methods and a path pattern (``{name}`` one segment, ``{name:path}`` the rest) with the check of its requests;
    ``upload``: the body may hold a file (up to :attr:`Policy.max_upload`)."""

    methods: frozenset[str]
    pattern: re.Pattern
    check: Callable[[Ctx], Awaitable[None]]
    upload: bool = False


def _route(methods: str, path: str, check: Callable[[Ctx], Awaitable[None]], upload: bool = False) -> Route:
    regex = re.sub(r"\{(\w+):path\}", r"(?P<\1>.*)", re.escape(path).replace(r"\{", "{").replace(r"\}", "}"))
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
    return Route(frozenset(methods.split()), re.compile(regex), check, upload)


_NO_WEIGHTS = "Weights are placed in the bundle's models/ folder on the server, not uploaded or deleted over HTTP."
_NO_SESSIONS = "Sessions are off on this server: upload images to the datastore (PUT /datastore/image)."
_NO_PROXY = (
    "The DICOMweb proxy serves GET reads of the server's PACS only (its studies, series, metadata and frames); this "
    "server has no PACS, or the request is not such a read."
)
_NO_WSI = "This server serves no whole-slide models."
_NO_ARCHIVE = (
    "The dataset archive is off on this server (MONAI Label writes a zip of every image and label per request and "
    "never removes it): copy the studies folder on the server instead."
)

ROUTES: tuple[Route, ...] = (
    _route("GET HEAD", "/", _no_params),
    _route("GET HEAD", "/docs", _no_params),
    _route("GET HEAD", "/openapi.json", _no_params),
    _route("GET HEAD", "/favicon.ico", _no_params),
    _route("GET HEAD", "/static/{path:path}", _static),
    _route("POST", "/reload", _no_params),
    _route("GET HEAD", "/info/", _info),
    _route("GET HEAD", "/login/", _login),
    _route("POST", "/login/token", _login),
    _route("GET HEAD", "/login/token/valid", _login),
    _route("GET HEAD", "/model/info/{model}", _model_download),
    _route("GET HEAD", "/model/{model}", _model_download),
    _route("PUT DELETE", "/model/{model}", _refused(_NO_WEIGHTS)),
    _route("POST", "/infer/wsi/{model}", _refused(_NO_WSI)),
    _route("POST", "/infer/wsi_v2/{model}", _refused(_NO_WSI)),
    _route("POST", "/infer/{model}", _infer),
    _route("GET HEAD", "/batch/infer", _task_status),
    _route("DELETE", "/batch/infer", _no_params),
    _route("POST", "/batch/infer/{model}", _batch_infer),
    _route("GET HEAD", "/train/", _task_status),
    _route("POST", "/train/", _train_all),
    _route("DELETE", "/train/", _no_params),
    _route("POST", "/train/{model}", _train),
    _route("POST", "/activelearning/{strategy}", _activelearning),
    _route("GET HEAD", "/scoring/", _task_status),
    _route("POST", "/scoring/", _scoring_all),
    _route("DELETE", "/scoring/", _no_params),
    _route("POST", "/scoring/{method}", _scoring),
    _route("GET HEAD", "/datastore/", _datastore),
    _route("PUT", "/datastore/", _add_image, upload=True),
    _route("PUT", "/datastore/image", _add_image, upload=True),
    _route("DELETE", "/datastore/", _image_remove),
    _route("DELETE", "/datastore/image", _image_remove),
    _route("GET HEAD", "/datastore/image", _image_read),
    _route("GET HEAD", "/datastore/image/info", _image_info),
    _route("PUT", "/datastore/image/info", _image_info_put),
    _route("PUT", "/datastore/label", _save_label, upload=True),
    _route("DELETE", "/datastore/label", lambda ctx: _label_read(ctx, "id")),
    _route("HEAD", "/datastore/label", lambda ctx: _label_read(ctx, "image")),
    _route("GET", "/datastore/label", _label_read),
    _route("GET HEAD", "/datastore/label/info", _label_read),
    _route("PUT", "/datastore/label/info", _label_info_put),
    _route("PUT", "/datastore/updatelabelinfo", lambda ctx: _label_info_put(ctx, "params")),
    _route("GET HEAD", "/datastore/dataset", _refused(_NO_ARCHIVE)),
    _route("GET HEAD", "/logs/", _logs),
    _route("GET HEAD", "/logs/gpu", _refused("GPU information is off on this server (run nvidia-smi on it).")),
    _route("GET HEAD", "/ohif/{path:path}", _static),
    _route("GET HEAD POST PUT DELETE", "/session/{path:path}", _refused(_NO_SESSIONS)),
    _route("GET HEAD", "/proxy/dicom/{op}/{path:path}", _dicom_proxy),
    _route("GET HEAD POST PUT DELETE", "/proxy/{path:path}", _refused(_NO_PROXY)),
)


# ---- temporary files ----------------------------------------------------------------------------------------------

_REQUEST_TMP: contextvars.ContextVar[str | None] = contextvars.ContextVar("mae_request_tmp", default=None)
_gettempdir = tempfile.gettempdir


def _request_gettempdir() -> str:
    """``tempfile.gettempdir`` while a request is served: that request's own folder, removed when it ends (MONAI Label
    writes uploads and results to temporary files and removes them only when the request succeeds)."""
    return _REQUEST_TMP.get() or _gettempdir()


# ---- the ASGI app -------------------------------------------------------------------------------------------------


def _replay(spool: Any, receive: Any) -> Callable[[], Awaitable[dict]]:
    """An ASGI ``receive`` giving ``spool``'s bytes from its start, then (if given) the original ``receive``."""
    spool.seek(0)
    done = False

    async def replay() -> dict:
        nonlocal done
        if not done:
            chunk = spool.read(1 << 20)
            more = bool(chunk) and spool.read(1) != b""
            if more:
                spool.seek(-1, 1)
            done = not more
            return {"type": "http.request", "body": chunk, "more_body": more}
        if receive is None:
            return {"type": "http.disconnect"}
        return await receive()

    return replay


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [IPv6]:port
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _route_path(scope: dict[str, Any]) -> str:
    """The path the routes see: without the server's ``--root_path`` prefix (as Starlette routes it)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


def _query(raw: bytes) -> dict[str, str]:
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError) as e:
        raise Refusal(422, f"The query string cannot be read: {e}") from None
    query: dict[str, str] = {}
    for key, value in pairs:
        if key in query:
            raise Refusal(422, f"Query parameter '{key[:40]}' is given twice.")
        if "\x00" in key or "\x00" in value:
            raise Refusal(422, f"Query parameter '{key[:40]}' holds a NUL character.")
        query[key] = value
    return query


class Guard:
    """The ASGI app in front of MONAI Label's ``app`` (see the module docstring)."""

    def __init__(self, app: ASGI, view: ServerView, policy: Policy) -> None:
        self.app, self.view, self.policy = app, view, policy
        tempfile.gettempdir = _request_gettempdir  # per-request temporary folders (:func:`_request_gettempdir`)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # MONAI Label serves no websockets
            await send({"type": "websocket.close", "code": 1008})
            return
        spool = tempfile.SpooledTemporaryFile(max_size=16 << 20, dir=self.policy.tmpdir)
        ctx = None
        try:
            try:
                ctx = await self._check(scope, receive, spool)
            except Refusal as r:
                response = JSONResponse({"detail": str(r)}, status_code=r.status)
                if r.status == 401:
                    response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
            if ctx is None:  # answered here (health)
                await JSONResponse({"status": "ok"})(scope, receive, send)
                return
            if ctx.answer is not None:  # answered here (the DICOMweb proxy)
                await ctx.answer(scope, receive, send)
                return
            for form in ctx.forms:
                await form.close()
            ctx.forms.clear()
            folder = tempfile.mkdtemp(prefix="request-", dir=self.policy.tmpdir)
            token = _REQUEST_TMP.set(folder)  # seen by the worker threads of MONAI Label's endpoints (a copied context)
            try:
                await self.app(scope, _replay(spool, receive), send)
            finally:
                _REQUEST_TMP.reset(token)
                shutil.rmtree(folder, ignore_errors=True)
        finally:
            if ctx is not None:
                for form in ctx.forms:
                    await form.close()
            spool.close()

    async def _check(self, scope: dict[str, Any], receive: Any, spool: Any) -> Ctx | None:
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers") or []:
            if k in headers and k in (b"host", b"origin", b"authorization", b"content-length", b"content-type"):
                raise Refusal(400, f"Header '{k.decode('latin-1')}' is given twice.")
            headers[k] = v
        host = headers.get(b"host", b"").decode("latin-1")
        if _host_name(host) not in self.policy.hosts:
            raise Refusal(403, f"Host {host[:80]!r} is not a name of this server.")
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1").rstrip("/") not in self.policy.origins:
            raise Refusal(403, f"Origin {origin.decode('latin-1')[:80]!r} is not allowed")
        method, path = scope["method"], _route_path(scope)
        if method == "GET" and path == HEALTH:
            return None
        preflight = method == "OPTIONS" and b"access-control-request-method" in headers
        if self.policy.token and not preflight:
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.policy.token}".encode()):
                raise Refusal(401, "This server needs its token: 'Authorization: Bearer <token>'.")
        if "\x00" in path:
            raise Refusal(404, "Not Found")
        route, params = self._route(method if not preflight else None, path)
        if preflight:
            await self._read(receive, spool, MAX_FORM)
            return Ctx(method, params, {}, "", self.view, self.policy, spool, receive)
        limit = self.policy.max_upload if route.upload else MAX_FORM
        declared = headers.get(b"content-length", b"0").decode("latin-1")
        if not declared.isdigit():
            raise Refusal(400, "Content-Length must be a number.")
        await self._read(receive, spool, limit, declared=int(declared))
        ctx = Ctx(
            method,
            params,
            _query(scope.get("query_string", b"")),
            headers.get(b"content-type", b"").decode("latin-1"),
            self.view,
            self.policy,
            spool,
            receive,
            root_path=scope.get("root_path", ""),
            _headers=[(k, v) for k, v in scope.get("headers") or []],
        )
        try:
            await route.check(ctx)
        except BaseException:
            for form in ctx.forms:
                await form.close()
            raise
        return ctx

    def _route(self, method: str | None, path: str) -> tuple[Route, dict[str, str]]:
        allowed = False
        for route in ROUTES:
            m = route.pattern.fullmatch(path) or (
                path.endswith("/") is False and route.pattern.fullmatch(path + "/")
            )  # FastAPI redirects /info to /info/
            if m:
                if method is None or method in route.methods:
                    return route, m.groupdict()
                allowed = True
        if allowed:
            raise Refusal(405, f"Method {method} is not allowed on {path[:80]}.")
        raise Refusal(404, "Not Found")

    async def _read(self, receive: Any, spool: Any, limit: int, declared: int = 0) -> None:
        """The body into ``spool``; over ``limit``, 413. An oversized body is read and dropped up to :data:`DRAIN`
        bytes first, so that the client reads the answer instead of a reset connection."""
        size, over = 0, declared > limit
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refusal(400, "The client went away.")
            chunk = message.get("body", b"")
            size += len(chunk)
            over = over or size > limit
            if not over:
                spool.write(chunk)
            if not message.get("more_body", False) or size > limit + DRAIN:
                break
        if over:
            raise Refusal(413, f"The request body ({max(size, declared)} bytes) is over this route's limit of {limit}.")
