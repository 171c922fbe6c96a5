"""Where the server reads its studies over DICOMweb, how it logs in there, and what an image id is on such a server.

``scripts/serve_monailabel.sh --studies <DICOMweb URL> [--dicomweb_credentials FILE] [--allow_insecure_dicomweb]``
runs this file before MONAI Label starts (and the app checks the same again, ``pacs_datastore.py``):

* the URL (:func:`check_dicomweb_url`) is ``http(s)://host[:port][/path]``: no user or password in it (it would show
  in ``ps`` and in MONAI Label's log), no query, no fragment, no ``..`` segment. Plain ``http`` only to a loopback
  host (``127.0.0.0/8``, ``::1``, ``localhost``): elsewhere the PACS password and the patients' images would cross
  the network in clear, so it takes ``https``, or ``--allow_insecure_dicomweb`` (a network the hospital trusts);
* the login (:func:`read_credentials`) is a file holding one line ``user:password`` (as ``scripts/orthanc.sh``
  writes), a regular file of this user that no one else may read (mode 0600). Only its path travels to the server
  (``MAE_MONAILABEL_DICOMWEB_CREDENTIALS``); the app reads it into its HTTP session. MONAI Label's own settings
  (``MONAI_LABEL_DICOMWEB_USERNAME``/``PASSWORD``) are refused: MONAI Label exports every setting to the environment
  of each process it starts and logs them at debug level;
* an image id of a DICOMweb datastore is a Series Instance UID (:data:`UID`: digits and dots, at most 64 characters,
  PS3.5 9.1); ``server_guard.py`` refuses any other, the datastore too.

    python dicomweb_access.py --url URL [--credentials FILE] [--allow_insecure]

exits 2 naming the problem, 0 when the URL and the file are fine (nothing printed).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import stat
import sys
import urllib.parse

__all__ = ["CREDENTIALS_ENV", "INSECURE_ENV", "UID", "check_dicomweb_url", "is_loopback", "is_uid", "read_credentials"]

UID = re.compile(r"[0-9]+(\.[0-9]+)*")  # PS3.5 9.1: digits and dots; fullmatch and at most 64 characters
MAX_UID = 64
CREDENTIALS_ENV = "MAE_MONAILABEL_DICOMWEB_CREDENTIALS"  # the path of the login file (never its contents)
INSECURE_ENV = "MAE_MONAILABEL_DICOMWEB_INSECURE"  # "1": plain http to a host that is not loopback is allowed
_PATH = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@/-]*")  # RFC 3986 path characters, no percent-encoding


def is_uid(value: object) -> bool:
    """Whether ``value`` is a DICOM UID: digits and dots (no empty component), at most 64 characters."""
    return isinstance(value, str) and len(value) <= MAX_UID and UID.fullmatch(value) is not None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 without brackets) names this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_dicomweb_url(url: str, allow_insecure: bool = False) -> str:
    """``url`` without a trailing ``/`` when it is a DICOMweb root this server may read (module docstring).

    Raises:
        ValueError: naming what is wrong with ``url``.
    """
    if not isinstance(url, str) or len(url) > 2048:
        raise ValueError("--studies: a DICOMweb URL is a string of at most 2048 characters.")
    if "@" in url:  # checked first: no message below repeats a password
        raise ValueError(
            "--studies: no user or password in the URL (it would show in ps and in the log); give them with "
            "--dicomweb_credentials FILE."
        )
    if any(c.isspace() or ord(c) < 32 or c == "\\" for c in url):
        raise ValueError(f"--studies {url[:80]!r}: a DICOMweb URL has no spaces, control characters or '\\'.")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"--studies {url!r}: a DICOMweb URL starts with http:// or https://.")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise ValueError(f"--studies {url!r}: {e}") from None
    if not host or (port is not None and not 1 <= port <= 65535):
        raise ValueError(f"--studies {url!r}: no host (or no valid port) in the URL.")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"--studies {url!r}: a DICOMweb root has no query ('?') and no fragment ('#').")
    if not _PATH.fullmatch(parts.path) or ".." in parts.path.split("/") or "." in parts.path.split("/"):
        raise ValueError(f"--studies {url!r}: the path must be plain (no '.' or '..' segment).")
    if parts.scheme == "http" and not is_loopback(host) and not allow_insecure:
        raise ValueError(
            f"--studies {url!r}: plain http to another machine sends the PACS password and the images in clear: use "
            "https, or --allow_insecure_dicomweb on a network you trust."
        )
    return url.rstrip("/")


def read_credentials(path: str | os.PathLike) -> tuple[str, str]:
    """``(user, password)`` from ``path``: a regular file of this user, mode 0600, one line ``user:password``.

    Raises:
        ValueError: naming the file and what is wrong with it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise ValueError(f"{path}: cannot open the DICOMweb credentials (a link is refused): {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise ValueError(
                f"{path}: the DICOMweb credentials must be a regular file of this user with mode 0600 (chmod 600 it)."
            )
        raw = os.read(fd, 4097)
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: the DICOMweb credentials are not UTF-8 text.") from None
    text = text[:-1] if text.endswith("\n") else text
    user, sep, password = text.partition(":")
    if len(raw) > 4096 or not sep or not user or not password or any(ord(c) < 32 or c == "\x7f" for c in text):
        raise ValueError(f"{path}: expected one line 'user:password' (both non-empty, no control characters).")
    return user, password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--credentials", default="")
    parser.add_argument("--allow_insecure", action="store_true")
    args = parser.parse_args(argv)
    try:
        check_dicomweb_url(args.url, args.allow_insecure)
        if args.credentials:
            read_credentials(args.credentials)
    except ValueError as e:
        print(f"serve_monailabel.sh: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
