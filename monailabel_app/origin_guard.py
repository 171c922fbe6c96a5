"""MONAI Label's server (``monailabel.app:app``) behind a check of the browser's ``Origin`` header.

``scripts/serve_monailabel.sh`` starts MONAI Label with ``--uvicorn_app origin_guard:app`` (a public option of
``monailabel start_server``). MONAI Label 0.8.5 answers a CORS preflight from any origin with that origin and
``allow-credentials: true`` unless ``MONAI_LABEL_CORS_ORIGINS`` is set, and setting it makes ``start_server`` fail
(``json.dumps`` of pydantic's ``AnyHttpUrl``; it would also store each origin with a trailing ``/`` that never equals
a browser's ``Origin``). Here, a request whose ``Origin`` header is not one of ``MAE_MONAILABEL_ORIGINS``
(comma-separated, set by the script: the server's own origins unless ``--cors`` gives others) is answered 403 before
MONAI Label sees it: a preflight, and also a form POST, which a web page may send without one. Requests without an
``Origin`` header (3D Slicer, scripts, curl) pass unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from monailabel.app import app as monailabel_server
from starlette.responses import PlainTextResponse

ORIGINS_ENV = "MAE_MONAILABEL_ORIGINS"


class OriginGuard:
    """An ASGI app answering 403 to HTTP requests from a browser origin not in ``origins`` (MONAI Label serves no
    websockets)."""

    def __init__(self, app: Callable[..., Awaitable[None]], origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(o.strip().rstrip("/") for o in origins if o.strip())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            origin = dict(scope.get("headers") or []).get(b"origin")
            if origin is not None and origin.decode("latin-1") not in self.origins:
                response = PlainTextResponse(f"Origin {origin.decode('latin-1')!r} is not allowed", status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


app = OriginGuard(monailabel_server, os.environ.get(ORIGINS_ENV, "").split(","))
