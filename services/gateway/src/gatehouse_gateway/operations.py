"""Author and audit operations, shared by the HTTP routes and the WebSocket handlers.

Each takes plain values, calls the upstream service and returns the public JSON shape
(dicts ready for serialisation), raising `ApiError` on failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from gatehouse_gateway import client_json
from gatehouse_gateway.cache import AuthorCache
from gatehouse_gateway.schemas import MAX_ID
from gatehouse_gateway.upstreams import Upstreams
from gatehouse_kit.tracing import sampled, traceparent_var
from gatehouse_protos.audit.v1 import audit_pb2
from gatehouse_protos.authors.v1 import authors_pb2
from gatehouse_protos.common.v1 import pagination_pb2

DEFAULT_PER_PAGE = 50
# The version of a tombstone left by a deletion through this process: above any real one.
DELETED_VERSION = 2**63
MAX_PER_PAGE = 1000

_OUTCOMES = {
    audit_pb2.OUTCOME_SUCCESS: "success",
    audit_pb2.OUTCOME_ERROR: "error",
    audit_pb2.OUTCOME_PERMISSION_DENIED: "permission_denied",
}
OUTCOME_VALUES = {name: value for value, name in _OUTCOMES.items()}


@dataclass(frozen=True, slots=True)
class AuthorFilter:
    """`id` and `name` match exactly; `search` is a case-insensitive substring of the name."""

    id: int | None = None
    name: str | None = None
    search: str | None = None


@dataclass(frozen=True, slots=True)
class Pagination:
    """Offset (`page`, `per_page`) or, when `cursor` is set, cursor pagination."""

    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Filters of the audit query; dates bound `timestamp` (start inclusive, end exclusive)."""

    user_id: str | None = None
    username: str | None = None
    action_type: str | None = None
    resource: str | None = None
    outcome: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None


@dataclass(frozen=True, slots=True)
class VersionedAuthor:
    """An author's public shape and its version (the basis of its ETag)."""

    data: dict[str, Any]
    version: int

    @property
    def etag(self) -> str:
        """The strong ETag of this version."""
        return f'"{self.version}"'


def iso(ts: Timestamp) -> str:
    """RFC 3339 text of a protobuf timestamp, in UTC."""
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def author_json(author: authors_pb2.Author) -> dict[str, Any]:
    """The public shape of an author."""
    return {
        "id": author.id,
        "name": author.name,
        "created_at": iso(author.created_at),
        "updated_at": iso(author.updated_at),
    }


def _remembered(cache: AuthorCache, author: authors_pb2.Author) -> VersionedAuthor:
    """The author's public shape, also kept in the edge cache."""
    versioned = VersionedAuthor(author_json(author), author.version)
    cache.put(author.id, versioned.data, author.version)
    return versioned


def meta_json(meta: pagination_pb2.PageMeta) -> dict[str, Any]:
    """The public shape of a page's meta."""
    return {
        "page": meta.page,
        "per_page": meta.per_page,
        "total": meta.total,
        "pages": meta.pages,
        "next_cursor": meta.next_cursor or None,
        "has_more": meta.has_more,
        "total_is_estimate": meta.total_is_estimate,
    }


def _author_filter(f: AuthorFilter) -> authors_pb2.AuthorFilter:
    return authors_pb2.AuthorFilter(id=f.id, name=f.name, search=f.search)


def _pages(p: Pagination) -> dict[str, Any]:
    if p.cursor is not None:
        return {"cursor": pagination_pb2.CursorPage(cursor=p.cursor, per_page=p.per_page)}
    return {"offset": pagination_pb2.OffsetPage(page=p.page, per_page=p.per_page)}


async def list_authors(upstreams: Upstreams, filter: AuthorFilter) -> list[dict[str, Any]]:
    """Authors matching `filter`, ordered by id, at most 1000."""
    reply = await upstreams.authors.call(
        upstreams.authors_reads.ListAuthors,
        authors_pb2.ListAuthorsRequest(filter=_author_filter(filter)),
    )
    return [author_json(a) for a in reply.authors]


async def list_authors_page(
    upstreams: Upstreams, filter: AuthorFilter, pagination: Pagination
) -> dict[str, Any]:
    """One page of authors matching `filter`: `{items, meta}`."""
    reply = await upstreams.authors.call(
        upstreams.authors_reads.ListAuthors,
        authors_pb2.ListAuthorsRequest(filter=_author_filter(filter), **_pages(pagination)),
    )
    return {"items": [author_json(a) for a in reply.authors], "meta": meta_json(reply.meta)}


async def get_author(upstreams: Upstreams, cache: AuthorCache, author_id: int) -> VersionedAuthor:
    """The author `author_id` (404 when missing), from the edge cache when it holds it."""
    cached = cache.get(author_id)
    if cached is not None:
        return VersionedAuthor(cached.data, cached.version)
    traceparent = traceparent_var.get()
    if not 0 < author_id <= MAX_ID or (traceparent is not None and sampled(traceparent)):
        # Alone: an id the service refuses must not fail the reads batched with it, and a
        # sampled request's trace keeps the authors service's spans.
        reply = await upstreams.authors.call(
            upstreams.authors_reads.GetAuthor, authors_pb2.GetAuthorRequest(id=author_id)
        )
    else:
        reply = await upstreams.author_batches.get(author_id)
    return _remembered(cache, reply)


async def create_author(upstreams: Upstreams, cache: AuthorCache, name: str) -> VersionedAuthor:
    """A new author (409 when the name is taken)."""
    reply = await upstreams.authors.call(
        upstreams.authors_writes.CreateAuthor, authors_pb2.CreateAuthorRequest(name=name)
    )
    return _remembered(cache, reply)


async def update_author(
    upstreams: Upstreams,
    cache: AuthorCache,
    author_id: int,
    name: str,
    expected_version: int | None = None,
) -> VersionedAuthor:
    """Rename an author; with `expected_version`, only if it is still that version (412)."""
    reply = await upstreams.authors.call(
        upstreams.authors_writes.UpdateAuthor,
        authors_pb2.UpdateAuthorRequest(id=author_id, name=name, expected_version=expected_version),
    )
    return _remembered(cache, reply)


async def delete_author(
    upstreams: Upstreams,
    cache: AuthorCache,
    author_id: int,
    expected_version: int | None = None,
) -> None:
    """Delete an author (404 when missing; 412 on a stale `expected_version`)."""
    await upstreams.authors.call(
        upstreams.authors_writes.DeleteAuthor,
        authors_pb2.DeleteAuthorRequest(id=author_id, expected_version=expected_version),
    )
    # Ids are never reused: the deletion outranks any version a read may still bring.
    cache.put(author_id, None, DELETED_VERSION)


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _request_data(text: str) -> Any:
    if not text:
        return None
    try:
        return client_json.parse(text)
    except client_json.InvalidJson:
        # Kept as text when a producer truncated it (or it is beyond what clients send).
        return text


def audit_log_json(event: audit_pb2.AuditEvent) -> dict[str, Any]:
    """The public shape of an audit event."""
    return {
        "id": event.id,
        "timestamp": iso(event.timestamp),
        "user_id": event.user_id,
        "username": event.username,
        "user_roles": list(event.user_roles),
        "action_type": event.action_type,
        "resource": event.resource,
        "outcome": _OUTCOMES.get(event.outcome, "error"),
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "request_data": _request_data(event.request_data),
        "response_status": event.response_status,
        "error_message": event.error_message or None,
        "duration_ms": event.duration_ms,
    }


async def list_audit_logs(
    upstreams: Upstreams, filter: AuditFilter, pagination: Pagination
) -> dict[str, Any]:
    """One page of audit events matching `filter`, newest first: `{items, meta}`."""
    event_filter = audit_pb2.EventFilter(
        user_id=filter.user_id,
        username=filter.username,
        action_type=filter.action_type,
        resource=filter.resource,
        outcome=OUTCOME_VALUES[filter.outcome] if filter.outcome else None,
        start_date=_timestamp(filter.start_date),
        end_date=_timestamp(filter.end_date),
    )
    reply = await upstreams.audit.call(
        upstreams.audit_reads.QueryEvents,
        audit_pb2.QueryEventsRequest(filter=event_filter, **_pages(pagination)),
    )
    return {"items": [audit_log_json(e) for e in reply.events], "meta": meta_json(reply.meta)}


async def get_audit_log(upstreams: Upstreams, event_id: int) -> dict[str, Any]:
    """The audit event `event_id` (404 when missing)."""
    reply = await upstreams.audit.call(
        upstreams.audit_reads.GetEvent, audit_pb2.GetEventRequest(id=event_id)
    )
    return audit_log_json(reply)
