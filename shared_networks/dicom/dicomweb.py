"""Uploading DICOM files to a PACS over DICOMweb: STOW-RS (DICOM PS3.18 10.5), with the standard library only.

The files go as ``multipart/related; type="application/dicom"`` POSTs to ``<dicomweb_url>/studies``, in batches of
at most ``batch_bytes``. The server answers each with a DICOM JSON dataset: Referenced SOP Sequence (0008,1199) for
the stored instances, Failed SOP Sequence (0008,1198) for the refused ones. Any refusal, HTTP error or unreachable
server raises :class:`StowError` naming the files and the server's status.

Example::

    stow_rs("http://127.0.0.1:8042/dicom-web", sorted(Path("dicom/img0001").glob("*.dcm")),
            auth=read_credentials("pacs/credentials"))
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

__all__ = ["StowError", "read_credentials", "stow_rs"]

logger = logging.getLogger(__name__)

REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class StowError(RuntimeError):
    """A STOW-RS upload failed: the message names the files, the URL and the server's status."""


def read_credentials(path: str | os.PathLike) -> tuple[str, str]:
    """``(user, password)`` from a file holding ``user:password`` (as ``scripts/orthanc.sh`` writes)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ValueError(f"{file}: cannot read the credentials: {e}") from e
    user, sep, password = text.partition(":")
    if not sep or not user or "\n" in text:
        raise ValueError(f"{file}: expected one line 'user:password'.")
    return user, password


def _check_url(dicomweb_url: str) -> str:
    parts = urllib.parse.urlsplit(dicomweb_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"dicomweb_url {dicomweb_url!r} is not an http(s) URL (e.g. http://127.0.0.1:8042/dicom-web).")
    return dicomweb_url.rstrip("/")


def _instance_uid(path: Path) -> str:
    """The SOP Instance UID of a DICOM file (PS3.10: preamble and ``DICM``); ``ValueError`` naming it otherwise."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except (OSError, InvalidDicomError) as e:
        raise ValueError(f"{path} is not a DICOM file (PS3.10, with preamble and 'DICM'): {e}") from e
    uid = str(getattr(ds, "SOPInstanceUID", "") or "")
    if not uid:
        raise ValueError(f"{path}: the DICOM file has no SOP Instance UID.")
    return uid


def _batches(files: Sequence[Path], batch_bytes: int) -> Iterable[list[Path]]:
    batch: list[Path] = []
    size = 0
    for path in files:
        n = path.stat().st_size
        if batch and size + n > batch_bytes:
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += n
    if batch:
        yield batch


def _multipart(files: Sequence[Path]) -> tuple[bytes, str]:
    """``(body, content type)`` of a multipart/related request with one application/dicom part per file."""
    boundary = f"stow-{uuid.uuid4().hex}"
    parts = []
    for path in files:
        parts += [
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii"),
            path.read_bytes(),
            b"\r\n",
        ]
    parts.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(parts), f'multipart/related; type="application/dicom"; boundary={boundary}'


def _post(url: str, body: bytes, content_type: str, auth: tuple[str, str] | None, timeout: float) -> tuple[int, Any]:
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode("utf-8", errors="replace")
        return response.status, json.loads(text) if text.strip() else {}


def _values(answer: Any, tag: str) -> list:
    return ((answer.get(tag) or {}).get("Value") or []) if isinstance(answer, dict) else []


def _not_stored(answer: Any, batch: dict[str, Path]) -> list[str]:
    """``"file: reason"`` for each file of ``batch`` (SOP Instance UID -> file) in the answer's Failed SOP Sequence
    or missing from its Referenced SOP Sequence (the instances stored)."""
    found, failed = [], set()
    for item in _values(answer, FAILED_SOP_SEQUENCE):
        uid = (_values(item, REFERENCED_SOP_INSTANCE_UID) or ["?"])[0]
        reason = (_values(item, FAILURE_REASON) or ["?"])[0]
        failed.add(uid)
        found.append(f"{batch.get(uid, uid)}: failure reason {reason}")
    stored = {
        (_values(item, REFERENCED_SOP_INSTANCE_UID) or [None])[0] for item in _values(answer, REFERENCED_SOP_SEQUENCE)
    }
    found += [f"{path}: not stored" for uid, path in batch.items() if uid not in stored and uid not in failed]
    return found


def _http_error(e: urllib.error.HTTPError, url: str, names: str, batch: dict[str, Path]) -> StowError:
    """The error of an HTTP error answer: the files it did not store when it says (DICOM JSON), else its text."""
    text = e.read().decode("utf-8", errors="replace")
    try:
        detail = "; ".join(_not_stored(json.loads(text), batch)) or text[:300]
    except json.JSONDecodeError:
        detail = text[:300]
    return StowError(f"STOW-RS of {names} to {url}: HTTP {e.code} {e.reason}: {detail}")


def stow_rs(
    dicomweb_url: str,
    files: Iterable[str | os.PathLike],
    *,
    auth: tuple[str, str] | None = None,
    timeout: float = 120.0,
    batch_bytes: int = 64 * 2**20,
) -> list[dict]:
    """Upload DICOM files to a DICOMweb server (STOW-RS).

    Args:
        dicomweb_url: the server's DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        files: DICOM files (PS3.10).
        auth: ``(user, password)`` for HTTP basic authentication (:func:`read_credentials` reads a file).
        timeout: seconds to wait for each request.
        batch_bytes: files per request up to this many bytes (a larger file goes alone).

    Returns:
        The server's answer to each request (DICOM JSON: its Referenced SOP Sequence lists the stored instances).

    Raises:
        ValueError: a bad URL, or a file that is missing or not DICOM (named), before anything is sent.
        StowError: the server refused files (named, with its failure reason), answered an HTTP error (its status and
            message, and the files of that request) or could not be reached.
    """
    base = _check_url(dicomweb_url)
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("no files to upload.")
    uids = {p: _instance_uid(p) for p in paths}
    host = urllib.parse.urlsplit(base).hostname
    if auth is not None and base.startswith("http://") and host not in LOOPBACK:
        logger.warning("sending credentials over plain http to %s: use https outside this machine", host)
    url, answers = f"{base}/studies", []
    for batch in _batches(paths, batch_bytes):
        body, content_type = _multipart(batch)
        by_uid = {uids[p]: p for p in batch}
        names = ", ".join(str(p) for p in batch[:3]) + (f" and {len(batch) - 3} more" if len(batch) > 3 else "")
        try:
            status, answer = _post(url, body, content_type, auth, timeout)
        except urllib.error.HTTPError as e:
            raise _http_error(e, url, names, by_uid) from e
        except (urllib.error.URLError, OSError) as e:
            raise StowError(f"STOW-RS of {names}: cannot reach {url}: {e}") from e
        except json.JSONDecodeError as e:
            raise StowError(f"STOW-RS of {names} to {url}: the answer is not JSON: {e}") from e
        problems = _not_stored(answer, by_uid)
        if problems:
            raise StowError(f"STOW-RS to {url} (HTTP {status}): " + "; ".join(problems))
        logger.info("STOW-RS: %d file(s) stored at %s (HTTP %d)", len(batch), base, status)
        answers.append(answer)
    return answers
