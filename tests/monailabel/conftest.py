"""The live MONAI Label server shared by the test files of this folder (``live_server.py``)."""

from __future__ import annotations

import contextlib
import locale

import pytest
from live_server import SHARED_DATA, Server, start_server


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


@pytest.fixture(autouse=True)
def utf8_locale():
    """Each test of this folder reads configs as UTF-8 (:func:`utf8_ctype`)."""
    with utf8_ctype():
        yield


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real sample data {SHARED_DATA} is absent (it exists in CI beside the checkout, not in a fresh clone)"
        )
    with utf8_ctype():
        srv = start_server(tmp_path_factory)
    try:
        yield srv
    finally:
        srv.stop()
