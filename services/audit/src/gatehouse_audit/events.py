"""Audit events between their wire form (`AuditEvent`) and their table rows.

An event that can never be stored (a malformed envelope, a NUL character) is not
refused with its batch: it becomes a `DeadLetter`, its content escaped
(`gatehouse_kit.audit_text`), for the `audit_dead_letters` table.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from google.protobuf import timestamp_pb2

from gatehouse_kit.audit_text import FIELD_LIMITS, storable_roles, storable_text
from gatehouse_protos.audit.v1 import audit_pb2

# The columns a write fills, in the order of a row; `id` is assigned by the table.
COLUMNS = (
    "event_id",
    "timestamp",
    "outcome",
    "user_roles",
    "user_id",
    "username",
    "action_type",
    "resource",
    "ip_address",
    "user_agent",
    "request_id",
    "request_data",
    "error_message",
    "response_status",
    "duration_ms",
    "trace_id",
)

Row = tuple[Any, ...]

OUTCOMES = {
    audit_pb2.OUTCOME_SUCCESS: "success",
    audit_pb2.OUTCOME_ERROR: "error",
    audit_pb2.OUTCOME_PERMISSION_DENIED: "permission_denied",
}
_OUTCOME_VALUES = {name: value for value, name in OUTCOMES.items()}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_SECONDS = 253402300800  # 10000-01-01T00:00:00Z
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A W3C trace id, or none.
_TRACE_ID = re.compile(r"(?:[0-9a-f]{32})?")
_TEXT_FIELDS = (
    "user_id",
    "username",
    "action_type",
    "resource",
    "ip_address",
    "user_agent",
    "request_id",
    "request_data",
    "error_message",
)


def to_datetime(ts: timestamp_pb2.Timestamp) -> datetime:
    """A protobuf Timestamp as an aware UTC datetime (microsecond precision)."""
    return EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def to_timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a protobuf Timestamp."""
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


@dataclass(frozen=True)
class DeadLetter:
    """An event set aside: why (`kind` invalid | refused, and the detail) and its content."""

    event_id: str
    kind: str
    reason: str
    content: str


def to_rows(events: Iterable[audit_pb2.AuditEvent]) -> tuple[list[Row], list[DeadLetter]]:
    """Table rows of the valid `events`, and a dead letter of each invalid one.

    This runs for every ingested event, so the common case (a valid event) is one
    cheap combined check; only a failing event is examined field by field.
    """
    rows: list[Row] = []
    dead: list[DeadLetter] = []
    outcomes = OUTCOMES
    uuid_match = _UUID.fullmatch
    trace_id_match = _TRACE_ID.fullmatch
    for event in events:
        event_id = event.event_id
        ts = event.timestamp
        outcome = outcomes.get(event.outcome)
        texts = (
            event.user_id,
            event.username,
            event.action_type,
            event.resource,
            event.ip_address,
            event.user_agent,
            event.request_id,
            event.request_data,
            event.error_message,
        )
        roles = list(event.user_roles)
        if (
            outcome is None
            or uuid_match(event_id) is None
            or trace_id_match(event.trace_id) is None
            or not event.HasField("timestamp")
            or not 0 <= ts.seconds < _MAX_SECONDS
            or "\x00" in "".join(texts)
            or "\x00" in "".join(roles)
        ):
            reason = "; ".join(f"{field} {why}" for field, why in _problems(event))
            dead.append(dead_letter(_event_fields(event), "invalid", reason))
            continue
        rows.append(
            (
                event_id,
                EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000),
                outcome,
                roles,
                *texts,
                event.response_status,
                event.duration_ms,
                event.trace_id,
            )
        )
    return rows, dead


def row_dead_letter(row: Row, reason: str) -> DeadLetter:
    """The dead letter of a row the database refused."""
    return dead_letter(dict(zip(COLUMNS, row, strict=True)), "refused", reason)


def dead_letter(fields: Mapping[str, Any], kind: str, reason: str) -> DeadLetter:
    """A dead letter of an event's `fields`, every text in it storable (bounded, escaped)."""
    given = str(fields.get("event_id", ""))
    event_id = given.lower() if _UUID.fullmatch(given) else str(uuid.uuid4())
    content = {name: _storable(name, value) for name, value in fields.items()}
    return DeadLetter(
        event_id=event_id,
        kind=kind,
        reason=storable_text(reason, FIELD_LIMITS["error_message"]),
        content=json.dumps(content, ensure_ascii=False, separators=(",", ":")),
    )


def _storable(name: str, value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value, FIELD_LIMITS.get(name, FIELD_LIMITS["request_id"]))
    if isinstance(value, list):
        return storable_roles([str(item) for item in value])
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _event_fields(event: audit_pb2.AuditEvent) -> dict[str, Any]:
    ts = event.timestamp
    return {
        "event_id": event.event_id,
        "timestamp": {"seconds": ts.seconds, "nanos": ts.nanos}
        if event.HasField("timestamp")
        else None,
        "outcome": OUTCOMES.get(event.outcome, event.outcome),
        "user_roles": list(event.user_roles),
        **{field: getattr(event, field) for field in _TEXT_FIELDS},
        "response_status": event.response_status,
        "duration_ms": event.duration_ms,
        "trace_id": event.trace_id,
    }


def _problems(event: audit_pb2.AuditEvent) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if _UUID.fullmatch(event.event_id) is None:
        problems.append(("event_id", "must be a UUID (8-4-4-4-12 hex digits)"))
    if not event.HasField("timestamp"):
        problems.append(("timestamp", "is required"))
    elif not 0 <= event.timestamp.seconds < _MAX_SECONDS:
        problems.append(("timestamp", "must be between 1970 and 9999"))
    if event.outcome not in OUTCOMES:
        problems.append(("outcome", "must be success, error or permission_denied"))
    if _TRACE_ID.fullmatch(event.trace_id) is None:
        problems.append(("trace_id", "must be 32 lowercase hex digits, or empty"))
    # PostgreSQL text cannot hold NUL characters; such an event could never be stored.
    problems.extend(
        (field, "must not contain NUL characters")
        for field in _TEXT_FIELDS
        if "\x00" in getattr(event, field)
    )
    if any("\x00" in role for role in event.user_roles):
        problems.append(("user_roles", "must not contain NUL characters"))
    return problems


def from_record(record: asyncpg.Record) -> audit_pb2.AuditEvent:
    """The wire form of a stored row."""
    return audit_pb2.AuditEvent(
        id=record["id"],
        event_id=str(record["event_id"]),
        timestamp=to_timestamp(record["timestamp"]),
        user_id=record["user_id"],
        username=record["username"],
        user_roles=record["user_roles"],
        action_type=record["action_type"],
        resource=record["resource"],
        outcome=_OUTCOME_VALUES[record["outcome"]],
        ip_address=record["ip_address"],
        user_agent=record["user_agent"],
        request_id=record["request_id"],
        request_data=record["request_data"],
        response_status=record["response_status"],
        error_message=record["error_message"],
        duration_ms=record["duration_ms"],
        trace_id=record["trace_id"],
    )
