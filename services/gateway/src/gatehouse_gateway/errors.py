"""The one error shape of the public API, and how failures of every kind map onto it.

HTTP bodies are `{"error": {"code", "msg", "details"}}`; WebSocket error responses carry
the same object as `data` with a `status_code` from `WsStatus`.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any

import grpc
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.rpc import status_pb2
from grpc_status import rpc_status
from prometheus_client import Counter
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gatehouse_kit.errors import field_violations

log = structlog.get_logger(__name__)

UNHANDLED_ERRORS = Counter(
    "gateway_unhandled_errors",
    "Exceptions caught by the gateway's last-resort handlers (each one a bug), by where: "
    "http (answered 500), http_after_response (after the answer: its audit event may be "
    "lost), ws_frame (answered INVALID_DATA), ws_message (answered ERROR), ws_socket "
    "(closed 1011).",
    ["where"],
)
for _where in ("http", "http_after_response", "ws_frame", "ws_message", "ws_socket"):
    UNHANDLED_ERRORS.labels(_where)


class ErrorCode(StrEnum):
    """The public error codes (docs/api.md, Errors)."""

    INVALID_DATA = "invalid_data"
    VALIDATION_ERROR = "validation_error"
    AUTHENTICATION_FAILED = "authentication_failed"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    PRECONDITION_FAILED = "precondition_failed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    SERVICE_UNAVAILABLE = "service_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    INTERNAL_ERROR = "internal_error"


class WsStatus(IntEnum):
    """`status_code` of a WebSocket response."""

    OK = 0
    ERROR = 1
    INVALID_DATA = 2
    PERMISSION_DENIED = 3
    NOT_FOUND = 4
    CONFLICT = 5
    RATE_LIMITED = 6
    UNAVAILABLE = 7


_WS_STATUS = {
    ErrorCode.INVALID_DATA: WsStatus.INVALID_DATA,
    ErrorCode.VALIDATION_ERROR: WsStatus.INVALID_DATA,
    ErrorCode.PAYLOAD_TOO_LARGE: WsStatus.INVALID_DATA,
    ErrorCode.AUTHENTICATION_FAILED: WsStatus.PERMISSION_DENIED,
    ErrorCode.PERMISSION_DENIED: WsStatus.PERMISSION_DENIED,
    ErrorCode.NOT_FOUND: WsStatus.NOT_FOUND,
    ErrorCode.CONFLICT: WsStatus.CONFLICT,
    ErrorCode.PRECONDITION_FAILED: WsStatus.CONFLICT,
    ErrorCode.RATE_LIMIT_EXCEEDED: WsStatus.RATE_LIMITED,
    ErrorCode.SERVICE_UNAVAILABLE: WsStatus.UNAVAILABLE,
    ErrorCode.UPSTREAM_TIMEOUT: WsStatus.UNAVAILABLE,
    ErrorCode.INTERNAL_ERROR: WsStatus.ERROR,
}


class ApiError(Exception):
    """A failure the client sees as `status` with `{"error": {code, msg, details}}`.

    `headers` are added to the HTTP response (e.g. `Retry-After`, `WWW-Authenticate`).
    """

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        msg: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.details = details
        self.headers = dict(headers or {})

    def payload(self) -> dict[str, Any]:
        """`{"code", "msg", "details"}`: the WebSocket `data` and the HTTP `error` object."""
        return {"code": str(self.code), "msg": self.msg, "details": self.details}

    def body(self) -> dict[str, Any]:
        """The HTTP response body."""
        return {"error": self.payload()}

    @property
    def ws_status(self) -> WsStatus:
        """The WebSocket `status_code` of this error."""
        return _WS_STATUS[self.code]

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!s}, {self.msg!r})"


# The protection space of every challenge: the Keycloak realm whose tokens are accepted.
REALM = "gatehouse"
_CHALLENGE = f'Bearer realm="{REALM}"'


def authentication_required() -> ApiError:
    """401 for a request that sent no bearer token (no `Authorization`, another scheme, or
    an empty token): the bare challenge, with no error code (RFC 6750, section 3.1)."""
    return ApiError(
        401,
        ErrorCode.AUTHENTICATION_FAILED,
        "missing bearer token",
        headers={"WWW-Authenticate": _CHALLENGE},
    )


def authentication_failed(msg: str) -> ApiError:
    """401 for a bearer token that was sent and refused: the challenge with
    `error="invalid_token"` (RFC 6750, section 3.1); `msg` never contains the token."""
    return ApiError(
        401,
        ErrorCode.AUTHENTICATION_FAILED,
        msg,
        headers={
            "WWW-Authenticate": (f'{_CHALLENGE}, error="invalid_token", error_description="{msg}"')
        },
    )


def permission_denied(role: str) -> ApiError:
    """403 for a caller lacking `role`."""
    return ApiError(
        403, ErrorCode.PERMISSION_DENIED, "insufficient role", details={"required_role": role}
    )


def service_unavailable(service: str, msg: str | None = None) -> ApiError:
    """503 for a dependency that cannot answer now."""
    return ApiError(
        503,
        ErrorCode.SERVICE_UNAVAILABLE,
        msg or f"{service} is unavailable",
        details={"service": service},
        headers={"Retry-After": "1"},
    )


def _violations(error: grpc.aio.AioRpcError) -> list[dict[str, str]]:
    status: status_pb2.Status | None = rpc_status.from_call(error)
    if status is None:
        return []
    return [{"field": f, "msg": d} for f, d in field_violations(status)]


def from_grpc(error: grpc.aio.AioRpcError, service: str) -> ApiError:
    """Map a failed upstream call onto the public error of docs/api.md (Errors).

    Messages of client errors (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
    FAILED_PRECONDITION) come from our own services and are safe to show; for anything
    else only a generic message is returned, so no internal detail leaks.
    """
    code = error.code()
    message = error.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return ApiError(400, ErrorCode.VALIDATION_ERROR, message, _violations(error))
    if code == grpc.StatusCode.NOT_FOUND:
        return ApiError(404, ErrorCode.NOT_FOUND, message or "not found")
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return ApiError(409, ErrorCode.CONFLICT, message or "conflict")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return ApiError(412, ErrorCode.PRECONDITION_FAILED, message or "precondition failed")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return service_unavailable(service, f"{service} is overloaded")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        # CANCELLED here comes from the upstream's side (the gateway's own cancellations
        # surface as asyncio's): it dropped the call, overloaded by a burst or stopping.
        return service_unavailable(service)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ApiError(
            504,
            ErrorCode.UPSTREAM_TIMEOUT,
            f"{service} did not answer in time",
            {"service": service},
        )
    log.error("upstream_error", service=service, grpc_code=code.name)
    return internal_error()


def error_response(error: ApiError) -> JSONResponse:
    """The HTTP response of `error`."""
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _remember(request: Request, error: ApiError) -> None:
    # The audit and access-log middleware reads this to record why the request failed.
    request.state.error = error


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    _remember(request, exc)
    return error_response(exc)


def _location(loc: tuple[int | str, ...]) -> str:
    # ("body", "name") -> "name"; ("query", "per_page") -> "per_page"
    parts = [str(p) for p in loc[1:]] if len(loc) > 1 else [str(p) for p in loc]
    return ".".join(parts)


def validation_error(exc: RequestValidationError) -> ApiError:
    """400 for a request that does not fit the route's schema.

    A body that is not JSON at all is `invalid_data`; well-formed input breaking a rule
    is `validation_error` with one `{field, msg}` per violation.
    """
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return ApiError(400, ErrorCode.INVALID_DATA, "request body is not valid JSON")
    details = [
        {"field": _location(tuple(e.get("loc", ()))), "msg": e.get("msg", "")} for e in errors
    ]
    return ApiError(400, ErrorCode.VALIDATION_ERROR, "request validation failed", details)


def invalid_document(invalid: ValidationError, whole: str, msg: str) -> ApiError:
    """400 `validation_error` for a JSON document (a request body, a frame's `data`) that
    breaks its schema: one `{field, msg}` per violation, the field a dotted path inside
    the document, or `whole` for the document itself."""
    details = [
        {"field": ".".join(str(p) for p in e.get("loc", ())) or whole, "msg": e.get("msg", "")}
        for e in invalid.errors()
    ]
    return ApiError(400, ErrorCode.VALIDATION_ERROR, msg, details)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    error = validation_error(exc)
    _remember(request, error)
    return error_response(error)


_HTTP_CODES = {
    400: ErrorCode.INVALID_DATA,
    401: ErrorCode.AUTHENTICATION_FAILED,
    403: ErrorCode.PERMISSION_DENIED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_DATA,
    409: ErrorCode.CONFLICT,
    412: ErrorCode.PRECONDITION_FAILED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    429: ErrorCode.RATE_LIMIT_EXCEEDED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.INTERNAL_ERROR)
    msg = "not found" if exc.status_code == 404 else str(exc.detail)
    error = ApiError(exc.status_code, code, msg, headers=dict(exc.headers or {}))
    _remember(request, error)
    return error_response(error)


def internal_error() -> ApiError:
    """500 for a bug; what went wrong is logged, never shown."""
    return ApiError(500, ErrorCode.INTERNAL_ERROR, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    """Make every failure of `app` answer in the error shape of docs/api.md."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
