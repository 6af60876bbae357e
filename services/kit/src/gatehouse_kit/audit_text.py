"""Text that PostgreSQL will store: the one escaping of audit event fields.

PostgreSQL `text` refuses NUL characters, and a Python `str` may hold lone surrogates
(from `\\ud800` escapes in JSON, or bytes decoded with `surrogateescape`) that are not
UTF-8 at all: protobuf refuses to carry them. `storable_text(text, limit)` returns the
text unchanged when it has neither and fits `limit` characters (the common case, one
cheap check); otherwise NUL becomes the six characters `\\u0000`, each lone surrogate
its `\\udXXX` escape, and text longer than `limit` keeps its start followed by
`…[N chars]` (N: the escaped text's full length), the whole within `limit`. A
backslash already in the text is left alone, so an escape shows what arrived but is
not reversible.

`FIELD_LIMITS` bounds each text field of an `AuditEvent` (characters); the gateway
applies them to every event it builds, and the audit service to what it sets aside in
its dead-letter table.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

_NUL = "\x00"
_NUL_ESCAPE = "\\u0000"
_MARKER = "…[{} chars]"

# Characters per text field of an AuditEvent. `request_data` is JSON already bounded in
# bytes by `gatehouse_kit.redaction.request_data_json` (4 KiB by default), so its limit
# is a backstop that valid JSON never reaches; the indexed fields (`user_id`,
# `action_type`) stay far below PostgreSQL's B-tree entry limit (about 2.7 kB).
FIELD_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        "user_id": 256,
        "username": 256,
        "user_role": 256,
        "action_type": 512,
        "resource": 2048,
        "ip_address": 64,
        "user_agent": 512,
        "request_id": 128,
        "request_data": 16384,
        "error_message": 1024,
    }
)
# Roles kept of one event's `user_roles`.
MAX_ROLES = 64


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def storable_text(text: str, limit: int) -> str:
    """`text` with NUL and lone surrogates escaped, within `limit` characters (module doc)."""
    if len(text) <= limit and _NUL not in text and (text.isascii() or _is_utf8(text)):
        return text
    escaped = text.encode("utf-8", "backslashreplace").decode().replace(_NUL, _NUL_ESCAPE)
    if len(escaped) <= limit:
        return escaped
    marker = _MARKER.format(len(escaped))
    return escaped[: max(limit - len(marker), 0)] + marker[:limit]


def storable_field(field: str, text: str) -> str:
    """`storable_text` with the limit of the AuditEvent text field `field`."""
    return storable_text(text, FIELD_LIMITS[field])


def storable_roles(roles: list[str]) -> list[str]:
    """At most `MAX_ROLES` roles, each storable."""
    limit = FIELD_LIMITS["user_role"]
    return [storable_text(role, limit) for role in roles[:MAX_ROLES]]
