"""The viewer's window on the PACS: a read-only DICOMweb proxy answered by the guard, not by MONAI Label.

MONAI Label's OHIF page (``/ohif/``) reads studies through ``/proxy/dicom/qido/...`` and ``/proxy/dicom/wado/...``.
MONAI Label 0.8.5's own proxy forwards any client path, method and header to the PACS (``POST`` included, so STOW
into the PACS), with the server's PACS login, in a blocking call without a time limit inside its event loop, and
drops the query string. ``server_guard.py`` refuses that route and answers ``GET /proxy/dicom/{qido|wado}/<path>``
itself with :class:`PacsReader` when the datastore is a PACS:

* the path is one of the reads a viewer makes (:func:`upstream_path`): the study list, a study's series, a series'
  instances, metadata, an instance, its frames and its bulk data, every UID checked (``dicomweb_access.is_uid``) so
  the URL asked of the PACS is built here from checked parts, never copied from the client;
* a search takes the QIDO-RS matching keys a viewer sends (:data:`QIDO_KEYS`), each value printable and short; a
  retrieve takes no query;
* only ``Accept`` travels to the PACS (printable, short); the PACS login is the server's, never the client's headers;
* every call has a bounded time (connect and between bytes) and follows no redirect; pixel data and instances are
  passed on as they arrive (no answer is held in memory whole but JSON), each answer capped (:data:`MAX_ANSWER`,
  :data:`MAX_JSON`); the answer keeps the PACS's status for 2xx, 400 and 404, else 502/504 naming what was asked;
  its content type is one DICOMweb uses (else ``application/octet-stream``), with ``nosniff``;
* bulk-data URIs in metadata that point at the PACS are rewritten to point at this proxy, so the browser never
  learns the PACS's address and fetches bulk data through the same checks.

Nothing here writes: no STOW, no delete, no reject.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from dicomweb_access import is_uid

__all__ = [
    "MAX_ANSWER",
    "MAX_JSON",
    "QIDO_KEYS",
    "PacsReader",
    "ProxyAnswer",
    "ProxyRefused",
    "check_query",
    "upstream_path",
]

MAX_ANSWER = 512 << 20  # bytes of one streamed answer: a whole CT instance or a multi-frame SEG fits
MAX_JSON = 64 << 20  # bytes of a JSON answer (read whole to rewrite its bulk-data URIs): a study's metadata fits
TIMEOUT_S = (10.0, 60.0)  # connect, then between two reads
MAX_VALUE = 256  # characters of one query value or of the Accept header
QIDO_KEYS = frozenset(
    {
        "limit",
        "offset",
        "fuzzymatching",
        "includefield",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyDate",
        "StudyTime",
        "StudyDescription",
        "StudyID",
        "StudyInstanceUID",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "SeriesInstanceUID",
        "SeriesNumber",
        "SeriesDescription",
        "Modality",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        # the same keys as tags (PS3.18 8.3.4: a matching key is a keyword or a tag)
        "00100010",
        "00100020",
        "00080050",
        "00080020",
        "00081030",
        "0020000D",
        "00080061",
        "0020000E",
        "00080060",
    }
)
CONTENT_TYPES = (
    "application/dicom+json",
    "application/json",
    "application/dicom",
    "application/octet-stream",
    "multipart/related",
    "image/jpeg",
    "image/jp2",
    "image/jls",
    "image/png",
)
_FRAMES = re.compile(r"[1-9][0-9]{0,5}(,[1-9][0-9]{0,5}){0,63}")
_BULK = re.compile(r"([0-9A-Fa-f]{8}|[0-9]{1,6})(/([0-9A-Fa-f]{8}|[0-9]{1,6})){0,15}")
_INCLUDEFIELD = re.compile(r"[A-Za-z0-9]{1,64}(,[A-Za-z0-9]{1,64}){0,63}")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


class ProxyRefused(Exception):
    """A request the proxy does not serve: ``status`` and the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ProxyAnswer:
    """A PACS answer to pass on: ``body`` (JSON, read whole) or ``stream`` (anything else, its chunks as they
    arrive; the connection to the PACS closes when it ends)."""

    status: int
    content_type: str
    body: bytes = b""
    stream: Iterator[bytes] | None = None

    def read(self) -> bytes:
        """The whole body (a stream is consumed)."""
        return self.body if self.stream is None else b"".join(self.stream)


def _uids(*parts: str) -> bool:
    return all(is_uid(p) for p in parts)


def upstream_path(op: str, path: str) -> tuple[str, bool]:
    """``(path below the DICOMweb root, is_search)`` for a viewer's read ``/proxy/dicom/<op>/<path>``.

    Raises:
        ProxyRefused: 404 for anything but the reads of the module docstring.
    """
    if op not in ("qido", "wado"):
        raise ProxyRefused(404, f"The DICOMweb proxy serves qido and wado reads only, not {op[:20]!r}.")
    p = path.split("/")
    n = len(p)
    search = (
        p == ["studies"]
        or (n == 3 and p[0] == "studies" and p[2] == "series" and _uids(p[1]))
        or (n == 5 and p[0] == "studies" and p[2] == "series" and p[4] == "instances" and _uids(p[1], p[3]))
    )
    metadata = (n == 3 and p[0] == "studies" and p[2] == "metadata" and _uids(p[1])) or (
        p[:1] == ["studies"]
        and p[2:3] == ["series"]
        and (n == 5 or (n == 7 and p[4] == "instances"))
        and p[-1] == "metadata"
        and _uids(*p[1 : n - 1 : 2])
    )
    if search and op == "qido":
        return path, True
    if metadata:  # some OHIF versions ask for metadata under the QIDO root; it is a WADO-RS retrieve
        return path, False
    instance = n >= 6 and p[0] == "studies" and p[2] == "series" and p[4] == "instances" and _uids(p[1], p[3], p[5])
    if op == "wado" and instance:
        rest = p[6:]
        if (
            not rest
            or (len(rest) == 2 and rest[0] == "frames" and _FRAMES.fullmatch(rest[1]))
            or (len(rest) >= 2 and rest[0] == "bulk" and _BULK.fullmatch("/".join(rest[1:])))
        ):
            return path, False
    raise ProxyRefused(404, f"The DICOMweb proxy does not serve {op}/{path[:120]!r} (read-only viewer paths only).")


def check_query(query: Mapping[str, str], search: bool) -> dict[str, str]:
    """The query to pass on: QIDO-RS matching keys for a search (:data:`QIDO_KEYS`), nothing for a retrieve.

    Raises:
        ProxyRefused: 422 naming the parameter.
    """
    if not search and query:
        raise ProxyRefused(422, f"A DICOMweb retrieve takes no query parameters (got {sorted(query)[0][:40]!r}).")
    for key, value in query.items():
        if key not in QIDO_KEYS:
            raise ProxyRefused(422, f"Query parameter {key[:40]!r} is not a QIDO-RS key this proxy passes on.")
        if len(value) > MAX_VALUE or not _PRINTABLE.fullmatch(value):
            raise ProxyRefused(422, f"Query parameter {key!r}: at most {MAX_VALUE} printable ASCII characters.")
        if key in ("limit", "offset") and not (value.isdigit() and len(value) <= 6):
            raise ProxyRefused(422, f"Query parameter {key!r} must be a number below 1000000.")
        if key == "fuzzymatching" and value not in ("true", "false"):
            raise ProxyRefused(422, "Query parameter 'fuzzymatching' must be true or false.")
        if key == "includefield" and value != "all" and not _INCLUDEFIELD.fullmatch(value):
            raise ProxyRefused(422, "Query parameter 'includefield' must be 'all' or comma-separated keywords or tags.")
    return dict(query)


def check_accept(accept: str) -> str | None:
    """The client's ``Accept`` header to pass on (``None``: the PACS's default).

    Raises:
        ProxyRefused: 422 when it is long or not printable ASCII.
    """
    if not accept:
        return None
    if len(accept) > MAX_VALUE or not _PRINTABLE.fullmatch(accept):
        raise ProxyRefused(422, f"The Accept header must be at most {MAX_VALUE} printable ASCII characters.")
    return accept


def _content_type(value: str) -> str:
    base = value.split(";", 1)[0].strip().lower()
    ok = base in CONTENT_TYPES and len(value) <= 512 and _PRINTABLE.fullmatch(value)
    return value if ok else "application/octet-stream"


class PacsReader:
    """GETs below the PACS's DICOMweb root ``url`` with ``session`` (the server's login), bounded in time and size."""

    def __init__(
        self,
        url: str,
        session: requests.Session,
        qido_prefix: str = "",
        wado_prefix: str = "",
        timeout: Any = TIMEOUT_S,
    ) -> None:
        self.url, self.session, self.timeout = url.rstrip("/"), session, timeout
        self.prefixes = {True: qido_prefix.strip("/"), False: wado_prefix.strip("/")}  # MONAI Label's settings

    def get(
        self, path: str, search: bool, query: Mapping[str, str], accept: str | None, proxy_root: str
    ) -> ProxyAnswer:
        """The PACS's answer to ``GET <url>/[<QIDO or WADO prefix>/]<path>?<query>``. A JSON answer is read whole
        (at most :data:`MAX_JSON`) and its bulk-data URIs point at ``proxy_root`` (this server's
        ``/proxy/dicom/wado``) instead of the PACS; any other answer (pixel data, instances) is passed on as it
        arrives, in chunks, and cut off past :data:`MAX_ANSWER`. Blocking: call it (and iterate the stream) from a
        worker thread.

        Raises:
            ProxyRefused: 502/504 when the PACS is unreachable, times out, redirects, fails or answers too much.
        """
        what = f"the PACS's answer to {path[:120]}"
        headers = {"Accept": accept} if accept else {}
        prefix = self.prefixes[search]
        try:
            r = self.session.get(
                f"{self.url}/{prefix + '/' if prefix else ''}{path}",
                params=dict(query),
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout:
            raise ProxyRefused(504, f"{what}: the PACS did not answer in time.") from None
        except requests.RequestException as e:
            raise ProxyRefused(502, f"{what}: the PACS does not answer ({type(e).__name__}).") from None
        try:
            if r.status_code >= 300 and r.status_code not in (400, 404):
                raise ProxyRefused(502, f"{what}: HTTP {r.status_code}.")
            ctype = _content_type(r.headers.get("Content-Type", ""))
            json_answer = "json" in ctype
            cap = MAX_JSON if json_answer else MAX_ANSWER
            declared = r.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > cap:
                raise ProxyRefused(502, f"{what} is over {cap >> 20} MiB ({int(declared)} bytes).")
            if not json_answer:
                return ProxyAnswer(r.status_code, ctype, stream=_chunks(r, what))
            body = b"".join(_chunks(r, what, cap))
        except requests.Timeout:
            r.close()
            raise ProxyRefused(504, f"{what}: the PACS did not answer in time.") from None
        except requests.RequestException as e:
            r.close()
            raise ProxyRefused(502, f"{what}: the PACS does not answer ({type(e).__name__}).") from None
        except BaseException:
            r.close()
            raise
        wado = f"{self.url}/{self.prefixes[False] + '/' if self.prefixes[False] else ''}"
        body = body.replace(wado.encode(), f"{proxy_root.rstrip('/')}/".encode())  # bulk-data URIs
        return ProxyAnswer(r.status_code, ctype, body)


def _chunks(r: requests.Response, what: str, cap: int | None = None) -> Iterator[bytes]:
    """``r``'s body in chunks, at most ``cap`` bytes (:data:`MAX_ANSWER` when ``None``: read at call time), then
    ``r`` closed. Past the cap it raises: a streamed answer is cut short, which its client sees."""
    cap = MAX_ANSWER if cap is None else cap
    size = 0
    try:
        for chunk in r.iter_content(1 << 20):
            size += len(chunk)
            if size > cap:
                raise ProxyRefused(502, f"{what} is over {cap >> 20} MiB.")
            yield chunk
    finally:
        r.close()
