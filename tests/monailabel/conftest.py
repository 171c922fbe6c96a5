"""The live MONAI Label server shared by the test files of this folder (``live_server.py``)."""

from __future__ import annotations

import pytest
from live_server import SHARED_DATA, Server, start_server, utf8_ctype


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
