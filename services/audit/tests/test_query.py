"""QueryEvents and GetEvent over a known set of stored events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from gatehouse_audit.app import AuditApp
from gatehouse_audit.events import OUTCOMES, to_rows, to_timestamp
from gatehouse_audit.repository import AuditRepository
from gatehouse_kit.errors import field_violations
from gatehouse_kit.grpc_client import open_channel
from gatehouse_protos.audit.v1 import audit_pb2, audit_pb2_grpc
from gatehouse_protos.common.v1 import pagination_pb2

from .conftest import new_event

T0 = datetime(2026, 1, 1, tzinfo=UTC)
USERS = ["u-1", "u-2", "u-3"]
OUTCOME_CYCLE = [
    audit_pb2.OUTCOME_SUCCESS,
    audit_pb2.OUTCOME_SUCCESS,
    audit_pb2.OUTCOME_ERROR,
    audit_pb2.OUTCOME_PERMISSION_DENIED,
]


def _dataset() -> list[audit_pb2.AuditEvent]:
    events = []
    for i in range(120):
        # Every 10th event shares its timestamp with the one before: ties go by id.
        minute = i - (1 if i % 10 == 9 else 0)
        events.append(
            new_event(
                when=T0 + timedelta(minutes=minute),
                user_id=USERS[i % 3],
                username=f"name-{USERS[i % 3]}",
                action_type=["GET /authors", "POST /authors", "WS:GET_AUTHORS"][i % 5 % 3],
                resource=f"/authors/{i % 4}",
                outcome=OUTCOME_CYCLE[i % 4],
                trace_id=f"{i + 1:032x}" if i % 2 else "",
            )
        )
    return events


@pytest.fixture(scope="module")
async def stored(audit_db: str) -> list[audit_pb2.AuditEvent]:
    """The dataset, stored, newest first (timestamp, then insertion order, descending)."""
    events = _dataset()
    repository = await AuditRepository.connect(audit_db, max_size=1)
    await repository.write(to_rows(events)[0])
    await repository.close()
    order = {e.event_id: i for i, e in enumerate(events)}
    return sorted(events, key=lambda e: (e.timestamp.ToDatetime(), order[e.event_id]), reverse=True)


async def _query(stub: Any, **kwargs: Any) -> audit_pb2.QueryEventsResponse:
    response: audit_pb2.QueryEventsResponse = await stub.QueryEvents(
        audit_pb2.QueryEventsRequest(**kwargs), timeout=5
    )
    return response


async def _all_ids(stub: Any, flt: audit_pb2.EventFilter) -> list[str]:
    response = await _query(
        stub, filter=flt, offset=pagination_pb2.OffsetPage(page=1, per_page=1000)
    )
    return [e.event_id for e in response.events]


def _ids(events: list[audit_pb2.AuditEvent]) -> list[str]:
    return [e.event_id for e in events]


@pytest.mark.parametrize(
    ("field", "value", "attr"),
    [
        ("user_id", "u-2", "user_id"),
        ("username", "name-u-3", "username"),
        ("action_type", "WS:GET_AUTHORS", "action_type"),
        ("resource", "/authors/1", "resource"),
    ],
)
async def test_each_filter_returns_exactly_the_matching_events_newest_first(
    stub: Any, stored: list[audit_pb2.AuditEvent], field: str, value: str, attr: str
) -> None:
    flt = audit_pb2.EventFilter()
    setattr(flt, field, value)
    got = await _all_ids(stub, flt)
    expected = _ids([e for e in stored if getattr(e, attr) == value])
    assert expected
    assert got == expected


@pytest.mark.parametrize("outcome", list(OUTCOMES))
async def test_the_outcome_filter(
    stub: Any, stored: list[audit_pb2.AuditEvent], outcome: int
) -> None:
    got = await _all_ids(stub, audit_pb2.EventFilter(outcome=outcome))  # type: ignore[arg-type]
    assert got == _ids([e for e in stored if e.outcome == outcome])


async def test_date_ranges_include_the_start_and_exclude_the_end(
    stub: Any, stored: list[audit_pb2.AuditEvent]
) -> None:
    start, end = T0 + timedelta(minutes=20), T0 + timedelta(minutes=50)

    def between(lo: datetime | None, hi: datetime | None) -> list[str]:
        return _ids(
            [
                e
                for e in stored
                if (lo is None or e.timestamp.ToDatetime(UTC) >= lo)
                and (hi is None or e.timestamp.ToDatetime(UTC) < hi)
            ]
        )

    both = audit_pb2.EventFilter(start_date=to_timestamp(start), end_date=to_timestamp(end))
    assert await _all_ids(stub, both) == between(start, end)
    assert len(between(start, end)) == 30
    only_start = audit_pb2.EventFilter(start_date=to_timestamp(start))
    assert await _all_ids(stub, only_start) == between(start, None)
    only_end = audit_pb2.EventFilter(end_date=to_timestamp(end))
    assert await _all_ids(stub, only_end) == between(None, end)
    combined = audit_pb2.EventFilter(
        user_id="u-1", outcome=audit_pb2.OUTCOME_ERROR, start_date=to_timestamp(start)
    )
    assert await _all_ids(stub, combined) == _ids(
        [
            e
            for e in stored
            if e.user_id == "u-1"
            and e.outcome == audit_pb2.OUTCOME_ERROR
            and e.timestamp.ToDatetime(UTC) >= start
        ]
    )


async def test_default_page_is_the_newest_fifty_with_meta(
    stub: Any, stored: list[audit_pb2.AuditEvent]
) -> None:
    response = await _query(stub)
    assert _ids(list(response.events)) == _ids(stored[:50])
    meta = response.meta
    assert (meta.page, meta.per_page, meta.total, meta.pages, meta.has_more) == (
        1,
        50,
        120,
        3,
        True,
    )
    assert not meta.total_is_estimate


async def test_offset_pages_cover_every_event_once_in_order(
    stub: Any, stored: list[audit_pb2.AuditEvent]
) -> None:
    seen: list[str] = []
    for page in range(1, 5):
        response = await _query(stub, offset=pagination_pb2.OffsetPage(page=page, per_page=35))
        seen += [e.event_id for e in response.events]
        assert response.meta.page == page
        assert response.meta.has_more == (page < 4)
    assert seen == _ids(stored)


async def test_cursor_pages_continue_exactly_even_while_new_events_arrive(
    stub: Any, stored: list[audit_pb2.AuditEvent]
) -> None:
    flt = audit_pb2.EventFilter(user_id="u-1")
    expected = _ids([e for e in stored if e.user_id == "u-1"])
    seen: list[str] = []
    cursor = ""
    while True:
        response = await _query(
            stub, filter=flt, cursor=pagination_pb2.CursorPage(cursor=cursor, per_page=7)
        )
        seen += [e.event_id for e in response.events]
        if not response.meta.has_more:
            assert response.meta.next_cursor == ""
            break
        cursor = response.meta.next_cursor
        # A newer event for the same user must not shift the following pages.
        newer = new_event(user_id="u-1", when=T0 + timedelta(days=1))
        await stub.IngestBatchUnary(audit_pb2.IngestBatch(events=[newer]), timeout=5)
    assert seen == expected


async def test_get_event_returns_it_or_not_found(
    stub: Any, stored: list[audit_pb2.AuditEvent]
) -> None:
    newest = (await _query(stub, offset=pagination_pb2.OffsetPage(page=1, per_page=1))).events[0]
    got = await stub.GetEvent(audit_pb2.GetEventRequest(id=newest.id), timeout=5)
    assert got == newest
    assert got.request_data == "{}"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetEvent(audit_pb2.GetEventRequest(id=10**12), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_events_come_back_with_the_request_and_trace_ids_they_were_written_with(
    stub: Any, stored: list[audit_pb2.AuditEvent]
) -> None:
    page = pagination_pb2.OffsetPage(page=1, per_page=1000)
    got = (await _query(stub, filter=audit_pb2.EventFilter(user_id=USERS[1]), offset=page)).events
    written = [e for e in stored if e.user_id == USERS[1]]
    assert {e.trace_id for e in written} > {""}
    assert [(e.event_id, e.request_id, e.trace_id) for e in got] == [
        (e.event_id, e.request_id, e.trace_id) for e in written
    ]


BAD_QUERIES: dict[str, tuple[dict[str, Any], str]] = {
    "end before start": (
        {
            "filter": audit_pb2.EventFilter(
                start_date=to_timestamp(T0), end_date=to_timestamp(T0 - timedelta(seconds=1))
            )
        },
        "filter.end_date",
    ),
    "garbage cursor": (
        {"cursor": pagination_pb2.CursorPage(cursor="%%%not-base64")},
        "cursor.cursor",
    ),
    "page zero": ({"offset": pagination_pb2.OffsetPage(page=0, per_page=10)}, "offset.page"),
    # One row past the deepest offset (MAX_OFFSET): a deep page would scan the table.
    "page too deep": (
        {"offset": pagination_pb2.OffsetPage(page=100_000 // 50 + 2, per_page=50)},
        "offset.page",
    ),
    "per_page too big": (
        {"offset": pagination_pb2.OffsetPage(page=1, per_page=1001)},
        "offset.per_page",
    ),
    "negative per_page": ({"cursor": pagination_pb2.CursorPage(per_page=-1)}, "cursor.per_page"),
    "unspecified outcome": (
        {"filter": audit_pb2.EventFilter(outcome=audit_pb2.OUTCOME_UNSPECIFIED)},
        "filter.outcome",
    ),
}


@pytest.mark.parametrize("case", list(BAD_QUERIES))
async def test_invalid_queries_are_invalid_argument_naming_the_field(stub: Any, case: str) -> None:
    kwargs, field = BAD_QUERIES[case]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _query(stub, **kwargs)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(refused.value)
    assert status is not None
    assert [f for f, _ in field_violations(status)] == [field]


async def test_a_cursor_is_refused_with_another_filter(
    stub: Any, stored: list[audit_pb2.AuditEvent]
) -> None:
    first = await _query(
        stub,
        filter=audit_pb2.EventFilter(user_id="u-1"),
        cursor=pagination_pb2.CursorPage(per_page=5),
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _query(
            stub,
            filter=audit_pb2.EventFilter(user_id="u-2"),
            cursor=pagination_pb2.CursorPage(cursor=first.meta.next_cursor, per_page=5),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
async def capped_stub(audit_db: str, start_audit: Any) -> AsyncIterator[Any]:
    app: AuditApp = await start_audit(audit_db, count_limit=10)
    channel = open_channel(f"127.0.0.1:{app.port}")
    yield audit_pb2_grpc.AuditServiceStub(channel)
    await channel.close()


async def test_totals_past_the_count_limit_are_estimates_and_say_so(
    capped_stub: Any, stored: list[audit_pb2.AuditEvent]
) -> None:
    big = await _query(capped_stub)
    assert big.meta.total_is_estimate
    assert big.meta.total >= 11
    small = await _query(
        capped_stub, filter=audit_pb2.EventFilter(username="name-u-2", resource="/authors/1")
    )
    assert not small.meta.total_is_estimate
    assert small.meta.total == len(small.events) == 10


@pytest.mark.parametrize(
    ("column", "value", "index"),
    [
        ("user_id", "u-9", "audit_events_user_time_idx"),
        ("username", "nobody", "audit_events_username_time_idx"),
        ("action_type", "DELETE /authors", "audit_events_action_time_idx"),
        ("resource", "/authors/none", "audit_events_resource_time_idx"),
        ("outcome", "error", "audit_events_outcome_time_idx"),
    ],
)
async def test_every_filter_has_an_index_in_page_order(
    stored: list[audit_pb2.AuditEvent], db: Any, column: str, value: str, index: str
) -> None:
    # A filter that matches few events or none must not walk the whole time index: on a
    # large table that reads every row (seconds, past the gateway's deadline).
    await db.execute("SET enable_seqscan = off")
    try:
        plan = await db.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT * FROM audit_events "
            f'WHERE {column} = $1 ORDER BY "timestamp" DESC, id DESC LIMIT 51',
            value,
        )
    finally:
        await db.execute("RESET enable_seqscan")
    assert f'"Index Name": "{index}"' in plan, plan
