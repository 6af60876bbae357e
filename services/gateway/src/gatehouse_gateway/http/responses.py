"""OpenAPI descriptions of the error responses routes can give."""

from __future__ import annotations

from typing import Any

from gatehouse_gateway.schemas import ErrorResponse

_DESCRIPTIONS = {
    400: "`invalid_data` (body is not JSON) or `validation_error` (with `{field, msg}` details)",
    401: "`authentication_failed`: missing, malformed, expired or foreign token (with "
    '`WWW-Authenticate: Bearer realm="gatehouse"`, and `error="invalid_token"` when a '
    "token was sent)",
    403: "`permission_denied`: the token lacks the route's role",
    404: "`not_found`",
    409: "`conflict`: the name is taken",
    412: "`precondition_failed`: `If-Match` does not match the current ETag",
    413: "`payload_too_large`: the body exceeds the limit (counted as received)",
    429: "`rate_limit_exceeded` (with `Retry-After`)",
    503: "`service_unavailable`: an upstream cannot answer (with `Retry-After`)",
    504: "`upstream_timeout`: an upstream did not answer in time",
}

RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": {
        "description": 'The rules counted, e.g. `"http_per_user";q=100;w=60` '
        "(draft-ietf-httpapi-ratelimit-headers)",
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'What is left of each rule, e.g. `"http_per_user";r=42;t=30` '
        "(draft-ietf-httpapi-ratelimit-headers)",
        "schema": {"type": "string"},
    },
    "X-RateLimit-Limit": {
        "description": "Requests allowed per window",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in the window",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Reset": {
        "description": "Seconds until the window frees a slot",
        "schema": {"type": "integer"},
    },
}

# Every authenticated route can be refused, limited or find an upstream down.
_API = (400, 401, 403, 429, 503, 504)


def api_errors(*extra: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for an authenticated route that may also answer the `extra` statuses."""
    statuses = sorted(set(_API) | set(extra))
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorResponse, "description": _DESCRIPTIONS[status]}
        if status == 429:
            entry["headers"] = {
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}},
                **RATE_LIMIT_HEADERS,
            }
        documented[status] = entry
    return documented
