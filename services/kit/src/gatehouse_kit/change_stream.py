"""The entries of the Redis Stream of author changes, shared by its writer (the authors
service's relay) and its readers (the gateway's hub); docs/authors.md, Change events.

An entry's ID is the event's **offset** (`"<milliseconds>-<sequence>"`); its fields:

- `event`: a serialized `gatehouse.authors.v1.AuthorEvent`;
- `prev`: the ID of the entry written just before it in the stream (`0-0` for the first
  one of a stream that was created afresh, e.g. after Redis lost it), so a reader that
  stood at offset P and reads an entry whose `prev` is not P knows it missed history;
- `oid`: the id of the outbox row it was relayed from (the relay's duplicate check).
"""

from __future__ import annotations

from typing import Any

EVENT = b"event"
PREV = b"prev"
OUTBOX_ID = b"oid"
# The position before the first entry of a stream.
ORIGIN = "0-0"
# What a client may send as an offset (docs/websocket.md, Recovery by offset).
OFFSET_PATTERN = r"[0-9]{1,20}-[0-9]{1,20}"


def offset_key(offset: str) -> tuple[int, int]:
    """An offset as the pair of integers it is ordered by."""
    milliseconds, _, sequence = offset.partition("-")
    return int(milliseconds), int(sequence)


Fields = dict[bytes, bytes]
Entry = tuple[str, Fields]


def entries(raw: Any) -> list[Entry]:
    """The entries of an XRANGE, XREVRANGE or one stream of XREAD (redis-py, bytes
    replies), as (offset, fields) pairs; none for a missing stream."""
    return [(_text(offset), dict(fields or {})) for offset, fields in raw or ()]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
