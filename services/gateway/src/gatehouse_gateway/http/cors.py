"""Cross-origin requests from browsers (CORS), for the origins the settings allow.

Starlette's `CORSMiddleware` decides, with two changes: a request without `Origin` (every
client but a browser calling cross-origin) passes straight through, with no work per
request, and a refused preflight answers in the API's error shape (400 `invalid_data`,
`details.disallowed`) instead of plain text. The app installs it only when some origin
is allowed: with none (production's default) no request pays for it, and a preflight is
answered like any OPTIONS, without `Access-Control-*`, which the browser takes as a
refusal (docs/api.md, Cross-origin requests).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gatehouse_gateway.errors import ApiError, ErrorCode, error_response
from gatehouse_gateway.settings import Settings

# What a browser script may read of an answer beyond the CORS-safelisted headers.
EXPOSED_HEADERS = (
    "ETag",
    "Location",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-Request-ID",
    "WWW-Authenticate",
)
_REFUSED = "Disallowed CORS "


class Cors(CORSMiddleware):
    """See the module docstring; configured by `Settings.cors_*`."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        super().__init__(
            app,
            allow_origins=settings.cors_origins,
            allow_methods=settings.cors_allowed_methods,
            allow_headers=settings.cors_allowed_headers,
            expose_headers=EXPOSED_HEADERS,
            max_age=settings.cors_max_age_seconds,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, _ in scope["headers"]:
                if name == b"origin":
                    await super().__call__(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        text = bytes(response.body).decode()
        disallowed = text.removeprefix(_REFUSED).split(", ")
        cors = {
            name: value
            for name, value in response.headers.items()
            if name.startswith("access-control-") or name == "vary"
        }
        return error_response(
            ApiError(
                400,
                ErrorCode.INVALID_DATA,
                "cross-origin request not allowed",
                details={"disallowed": disallowed},
                headers=cors,
            )
        )
