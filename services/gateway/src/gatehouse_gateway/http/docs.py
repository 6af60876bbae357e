"""The interactive API documentation at `/docs`: Swagger UI, served whole by the gateway.

Its script, style sheet and icon come from the `swagger-ui-bundle-v2` package, served
under `/docs/static/`, so the page works without any other site (docs/api.md, API
documentation). The page is made once, at import: the same bytes for every request, and
a Content-Security-Policy that allows the page's one inline script by its SHA-256 and
nothing from elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

PATH = "/docs"
ASSETS = "/docs/static"
OPENAPI = "/openapi.json"
TITLE = "Gatehouse - Swagger UI"

PAGE = bytes(
    get_swagger_ui_html(
        openapi_url=OPENAPI,
        title=TITLE,
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        # No badge fetched from the public validator: the page asks nothing of other sites.
        swagger_ui_parameters={"validatorUrl": None},
    ).body
)


def _inline_scripts(page: bytes) -> list[bytes]:
    return re.findall(rb"<script>(.*?)</script>", page, flags=re.DOTALL)


def _csp(page: bytes) -> str:
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _inline_scripts(page)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    )


CSP = _csp(PAGE)


def serves(path: str) -> bool:
    """Whether `path` is the docs page or one of its assets."""
    return path == PATH or path.startswith(ASSETS + "/")


async def _page(request: Request) -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8")


def install_docs(app: FastAPI) -> None:
    """Serve the page at `/docs` and Swagger UI's assets under `/docs/static/` (the app
    is built with `docs_url=None`)."""
    app.add_route(PATH, _page, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-static")
