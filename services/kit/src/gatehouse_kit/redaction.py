"""Redaction of secrets in data that goes into audit events.

- `redact(obj)` returns a copy of `obj` in which the value of every mapping key
  named in `SENSITIVE_KEYS` (compared case-insensitively, `-` taken as `_`, at any
  depth, inside lists and tuples too) is replaced by `"[REDACTED]"`.
- `request_data_json(data, max_bytes=...)` redacts `data` and renders it as compact
  JSON text for `AuditEvent.request_data`. When that text is longer than
  `max_bytes` (UTF-8), it is replaced by a small JSON object that says so:
  `{"_truncated": true, "_original_bytes": N, "_preview": "<the start of the text>"}`,
  itself within `max_bytes`, so request_data is always valid JSON of bounded size.
  Data holding lone surrogates (which UTF-8 cannot encode) is rendered with JSON's
  `\\uXXXX` escapes instead, so the text is always UTF-8.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

SENSITIVE_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "token",
        "access_token",
        "refresh_token",
        "secret",
        "api_key",
        "private_key",
        "ssn",
        "credit_card",
        "card_number",
        "cvv",
        "authorization",
    }
)

DEFAULT_MAX_BYTES = 4096

# Room that the truncation envelope itself takes, around the preview.
_ENVELOPE = '{"_truncated":true,"_original_bytes":,"_preview":""}'


def is_sensitive(key: object) -> bool:
    """True when `key` names a secret (case-insensitive, `-` and `_` alike)."""
    return isinstance(key, str) and key.casefold().replace("-", "_") in SENSITIVE_KEYS


def redact(obj: Any) -> Any:
    """A copy of `obj` with the values of sensitive keys replaced, recursively."""
    if isinstance(obj, Mapping):
        return {k: REDACTED if is_sensitive(k) else redact(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(item) for item in obj]
    return obj


def request_data_json(data: Any, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """`data` redacted, as JSON text of at most `max_bytes` UTF-8 bytes (see module doc)."""
    if data is None:
        return ""
    redacted = redact(data)
    text = json.dumps(redacted, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        # Lone surrogates (a JSON body's "\ud800"): JSON's own \uXXXX escapes carry them.
        text = json.dumps(redacted, separators=(",", ":"), default=str)
        size = len(text)
    if size <= max_bytes:
        return text
    room = max_bytes - len(_ENVELOPE) - len(str(size))
    preview = _json_prefix(text, max(room, 0))
    return json.dumps(
        {"_truncated": True, "_original_bytes": size, "_preview": preview},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _json_prefix(text: str, room: int) -> str:
    """The longest start of `text` whose JSON string encoding fits in `room` bytes."""
    low, high = 0, min(len(text), room)
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps(text[:middle], ensure_ascii=False).encode()) - 2 <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low]
