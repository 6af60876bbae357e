"""The browser console at `/console/`: a page and its script and style sheet, served whole
by the gateway from this package (`gatehouse_gateway/console/`), with no inline script
or style, so that its Content-Security-Policy allows scripts, styles and connections of
this origin only (docs/console.md). It signs in through the realm's `gatehouse-console`
client and calls the API and `/web` like any other client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

PATH = "/console"
PAGE = PATH + "/"
ASSETS = PATH + "/static"
_FILES = Path(__file__).resolve().parent.parent / "console"
_HTML = (_FILES / "index.html").read_bytes()
# `connect-src 'self'` takes the API, Keycloak's token endpoint (both on this origin)
# and the WebSocket /web of this host (ws: and wss: of the same host are 'self').
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def serves(path: str) -> bool:
    """Whether `path` is the console's page or one of its assets."""
    return path == PATH or path.startswith(PAGE)


async def _page(request: Request) -> Response:
    # The page is small and names its assets: always revalidated, never stale.
    return Response(
        _HTML, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
    )


async def _to_page(request: Request) -> Response:
    return RedirectResponse(PAGE, status_code=308)


def install_console(app: FastAPI) -> None:
    """Serve the page at `/console/` (`/console` redirects there) and its assets."""
    app.add_route(PATH, _to_page, methods=["GET"], include_in_schema=False)
    app.add_route(PAGE, _page, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS, StaticFiles(directory=str(_FILES / "static")), name="console-static")
