"""Queries over stored events: validation, filters, and opaque cursors.

Pages are ordered newest first by (timestamp DESC, id DESC), a total order, so a
cursor (the sort key of a page's last row) continues exactly where the page ended,
also while new events arrive. A cursor carries a fingerprint of the filter it was
made for and is refused with any other filter.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta

from gatehouse_audit.events import EPOCH, OUTCOMES, to_datetime
from gatehouse_kit.errors import InvalidArgument
from gatehouse_protos.audit.v1 import audit_pb2

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 1000
# The deepest offset page: PostgreSQL walks every row it skips, so a deep page would
# cost a scan of the table; the cursor reaches any depth at the cost of one page.
MAX_OFFSET = 100_000
_CURSOR_VERSION = 1


@dataclass(frozen=True)
class EventFilter:
    """Equality filters and a [start, end) time range; None means "any"."""

    user_id: str | None = None
    username: str | None = None
    action_type: str | None = None
    resource: str | None = None
    outcome: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(astuple(self)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SortKey:
    """Where a page ended: the last row's timestamp and id."""

    timestamp: datetime
    id: int


@dataclass(frozen=True)
class EventQuery:
    """One page of events matching `filter`: after `after` (cursor) or from `offset`."""

    filter: EventFilter
    per_page: int
    offset: int = 0
    after: SortKey | None = None
    cursor_mode: bool = False

    @property
    def page(self) -> int:
        return 0 if self.cursor_mode else self.offset // self.per_page + 1


def parse_query(request: audit_pb2.QueryEventsRequest) -> EventQuery:
    """The EventQuery a request asks for; InvalidArgument for anything malformed."""
    flt = parse_filter(request.filter)
    which = request.WhichOneof("pagination")
    if which == "cursor":
        per_page = _per_page(request.cursor.per_page, "cursor.per_page")
        after = decode_cursor(request.cursor.cursor, flt) if request.cursor.cursor else None
        return EventQuery(flt, per_page, after=after, cursor_mode=True)
    if which == "offset":
        per_page = _per_page(request.offset.per_page, "offset.per_page")
        if request.offset.page < 1:
            raise InvalidArgument("invalid page", [("offset.page", "must be at least 1")])
        offset = (request.offset.page - 1) * per_page
        if offset > MAX_OFFSET:
            raise InvalidArgument(
                "page too deep",
                [
                    (
                        "offset.page",
                        f"(page - 1) * per_page must be at most {MAX_OFFSET}; "
                        "continue with the cursor",
                    )
                ],
            )
        return EventQuery(flt, per_page, offset=offset)
    return EventQuery(flt, DEFAULT_PER_PAGE)


def parse_filter(message: audit_pb2.EventFilter) -> EventFilter:
    """The EventFilter of a request; the range must not end before it starts."""
    outcome: str | None = None
    if message.HasField("outcome"):
        if message.outcome not in OUTCOMES:
            raise InvalidArgument(
                "invalid outcome",
                [("filter.outcome", "must be success, error or permission_denied")],
            )
        outcome = OUTCOMES[message.outcome]
    start = to_datetime(message.start_date) if message.HasField("start_date") else None
    end = to_datetime(message.end_date) if message.HasField("end_date") else None
    if start is not None and end is not None and end < start:
        raise InvalidArgument(
            "invalid date range", [("filter.end_date", "must not be before start_date")]
        )
    return EventFilter(
        user_id=message.user_id if message.HasField("user_id") else None,
        username=message.username if message.HasField("username") else None,
        action_type=message.action_type if message.HasField("action_type") else None,
        resource=message.resource if message.HasField("resource") else None,
        outcome=outcome,
        start=start,
        end=end,
    )


def _per_page(value: int, field: str) -> int:
    if value == 0:
        return DEFAULT_PER_PAGE
    if not 1 <= value <= MAX_PER_PAGE:
        raise InvalidArgument("invalid page size", [(field, f"must be 1..{MAX_PER_PAGE}")])
    return value


def encode_cursor(key: SortKey, flt: EventFilter) -> str:
    """An opaque token continuing after `key` under `flt`."""
    micros = (key.timestamp - EPOCH) // timedelta(microseconds=1)
    payload = {"v": _CURSOR_VERSION, "t": micros, "i": key.id, "f": flt.fingerprint()}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, flt: EventFilter) -> SortKey:
    """The sort key in `token`; InvalidArgument unless it is a cursor made for `flt`."""
    bad = InvalidArgument("invalid cursor", [("cursor.cursor", "not a cursor of this query")])
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
    except (ValueError, binascii.Error) as error:
        raise bad from error
    if not (
        isinstance(payload, dict)
        and payload.get("v") == _CURSOR_VERSION
        and payload.get("f") == flt.fingerprint()
        and type(payload.get("t")) is int
        and type(payload.get("i")) is int
    ):
        raise bad
    try:
        moment = EPOCH + timedelta(microseconds=payload["t"])
    except OverflowError as error:
        raise bad from error
    return SortKey(moment, payload["i"])
