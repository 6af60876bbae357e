"""The error model of docs/api.md as exceptions.

Every answer of the API with a status of 400 or more carries
`{"error": {"code", "msg", "details"}}`; the WebSocket carries the same object in an
error response's `data`. Each `code` has its exception class, all of them subclasses of
`GatehouseError`, so a caller catches exactly what it can handle (`NotFound`,
`Conflict`, `RateLimitExceeded`...) or everything at once.
"""

from __future__ import annotations

from typing import Any


class GatehouseError(Exception):
    """An error answer of the platform (or a failure to reach it)."""

    code = "error"

    def __init__(
        self,
        msg: str,
        *,
        status: int | None = None,
        details: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(msg)
        self.msg = msg
        self.status = status
        self.details = details
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.msg}{where}"


class InvalidData(GatehouseError):
    """400 `invalid_data`: the body or frame is not JSON within the documented bounds."""

    code = "invalid_data"


class ValidationFailed(GatehouseError):
    """400 `validation_error`: `details` is a list of `{field, msg}`."""

    code = "validation_error"


class AuthenticationFailed(GatehouseError):
    """401 `authentication_failed`, or a token the identity provider refused to issue."""

    code = "authentication_failed"


class PermissionDenied(GatehouseError):
    """403 `permission_denied`: `details` names the `required_role`."""

    code = "permission_denied"


class NotFound(GatehouseError):
    """404 `not_found`."""

    code = "not_found"


class Conflict(GatehouseError):
    """409 `conflict`: the author name is taken."""

    code = "conflict"


class PreconditionFailed(GatehouseError):
    """412 `precondition_failed`: `If-Match` does not name the current version."""

    code = "precondition_failed"


class PayloadTooLarge(GatehouseError):
    """413 `payload_too_large`."""

    code = "payload_too_large"


class RateLimitExceeded(GatehouseError):
    """429 `rate_limit_exceeded` (WebSocket status 6), after the client's own retries."""

    code = "rate_limit_exceeded"

    @property
    def retry_after(self) -> float | None:
        """Seconds the platform asked to wait (`details.retry_after`), when it said."""
        if isinstance(self.details, dict):
            value = self.details.get("retry_after")
            if isinstance(value, int | float):
                return float(value)
        return None


class ServiceUnavailable(GatehouseError):
    """503 `service_unavailable` (or the platform could not be reached at all)."""

    code = "service_unavailable"


class UpstreamTimeout(GatehouseError):
    """504 `upstream_timeout`."""

    code = "upstream_timeout"


class InternalError(GatehouseError):
    """500 `internal_error`: a bug of the platform."""

    code = "internal_error"


class ConnectionLost(GatehouseError):
    """A WebSocket closed for good: `close_code` and the server's `msg` say why."""

    code = "connection_lost"

    def __init__(self, msg: str, *, close_code: int | None) -> None:
        super().__init__(msg)
        self.close_code = close_code


_BY_CODE: dict[str, type[GatehouseError]] = {
    cls.code: cls
    for cls in (
        InvalidData,
        ValidationFailed,
        AuthenticationFailed,
        PermissionDenied,
        NotFound,
        Conflict,
        PreconditionFailed,
        PayloadTooLarge,
        RateLimitExceeded,
        ServiceUnavailable,
        UpstreamTimeout,
        InternalError,
    )
}


def from_error_object(
    error: Any, *, status: int | None = None, request_id: str | None = None
) -> GatehouseError:
    """The exception for an error object `{code, msg, details}` of docs/api.md."""
    if not isinstance(error, dict):
        return GatehouseError(
            "answer without the error object", status=status, request_id=request_id
        )
    cls = _BY_CODE.get(str(error.get("code")), GatehouseError)
    return cls(
        str(error.get("msg", "")),
        status=status,
        details=error.get("details"),
        request_id=request_id,
    )
