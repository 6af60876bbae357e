"""The public JSON shapes: request bodies (validated) and responses (documented in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# The authors service refuses control characters (Unicode category Cc) and names that
# are empty after trimming; the documented schema says the same, so that anything valid
# per /openapi.json is accepted. The patterns read alike in Python, Rust and ECMA regex.
_CC = r"\x00-\x1f\x7f-\x9f"
PRINTABLE_PATTERN = rf"^[^{_CC}]*$"
NAME_PATTERN = rf"^[^{_CC}]*[^\s{_CC}][^{_CC}]*$"
AuthorName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255, pattern=NAME_PATTERN),
    Field(
        description="1..255 characters after trimming, at least one of them not blank; "
        "no control characters (Unicode category Cc)."
    ),
]
Outcome = Literal["success", "error", "permission_denied"]
# Ids are PostgreSQL bigints and page numbers the int32 of the services' pagination: the
# bounds of every id and page number a client sends, over HTTP and WebSocket alike.
MAX_ID = 2**63 - 1
MAX_PAGE = 2**31 - 1


class AuthorIn(BaseModel):
    """Body of POST and PUT `/authors`: `name` is 1..255 characters after trimming."""

    model_config = ConfigDict(extra="forbid")

    name: AuthorName


class Author(BaseModel):
    """An author as clients see it."""

    id: int
    name: str
    created_at: datetime
    updated_at: datetime


class PageMeta(BaseModel):
    """Where a page sits; `next_cursor` continues a cursor listing (null on the last page)."""

    page: int
    per_page: int
    total: int
    pages: int
    next_cursor: str | None
    has_more: bool
    total_is_estimate: bool = Field(
        description="True when `total` is an estimate from table statistics."
    )


class AuthorPage(BaseModel):
    """One page of authors."""

    items: list[Author]
    meta: PageMeta


class AuditLog(BaseModel):
    """One audit event; `request_data` is the redacted request."""

    id: int
    timestamp: datetime
    user_id: str
    username: str
    user_roles: list[str]
    action_type: str
    resource: str
    outcome: Outcome
    ip_address: str
    user_agent: str
    request_id: str
    request_data: Any
    response_status: int
    error_message: str | None
    duration_ms: float


class AuditLogPage(BaseModel):
    """One page of audit events, newest first."""

    items: list[AuditLog]
    meta: PageMeta


class ErrorBody(BaseModel):
    """`code` is one of the error codes of docs/api.md; `details` depends on the code."""

    code: str
    msg: str
    details: Any = None


class ErrorResponse(BaseModel):
    """Every response with a status of 400 or more."""

    error: ErrorBody


class HealthReport(BaseModel):
    """`status` is `ok` or `degraded`; `services` maps each dependency to `ok` or `down`."""

    status: Literal["ok", "degraded"]
    services: dict[str, Literal["ok", "down"]]


class Liveness(BaseModel):
    """`ok` while the process serves; `draining` (with 503) once it is shutting down."""

    status: Literal["ok", "draining"]
