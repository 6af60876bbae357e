"""Ingestion through the gateway's client and the RPCs: every acknowledged event is
stored exactly once, and every event not stored is counted."""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from gatehouse_audit.app import AuditApp
from gatehouse_kit.audit_client import AuditClient
from gatehouse_kit.audit_metrics import AuditCounts
from gatehouse_kit.grpc_client import open_channel
from gatehouse_protos.audit.v1 import audit_pb2, audit_pb2_grpc
from gatehouse_protos.common.v1 import pagination_pb2

from .conftest import EventFactory

BURST = 100_000


async def test_a_burst_of_100k_events_is_queryable_count_for_count(
    audit_app: AuditApp, make_event: EventFactory
) -> None:
    counts = AuditCounts()
    client = AuditClient(
        f"127.0.0.1:{audit_app.port}", capacity=BURST, batch_size=1000, counts=counts
    )
    await client.start()
    events = [make_event(user_id="burst", username=f"user-{i % 100}") for i in range(BURST)]
    started = time.perf_counter()
    accepted = sum(client.enqueue(event) for event in events)
    await client.close(timeout=120)
    elapsed = time.perf_counter() - started

    received, written, dropped, queued = counts.snapshot()
    assert (accepted, received, written, dropped, queued) == (BURST, BURST, BURST, {}, 0)
    assert elapsed < 120
    # Every one of them is queryable: walk all cursor pages of the user's events.
    channel = open_channel(f"127.0.0.1:{audit_app.port}")
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    found: list[str] = []
    cursor = ""
    while True:
        page = await stub.QueryEvents(
            audit_pb2.QueryEventsRequest(
                filter=audit_pb2.EventFilter(user_id="burst"),
                cursor=pagination_pb2.CursorPage(cursor=cursor, per_page=1000),
            ),
            timeout=10,
        )
        assert page.meta.total == BURST
        assert not page.meta.total_is_estimate
        found += [e.event_id for e in page.events]
        if not page.meta.has_more:
            break
        cursor = page.meta.next_cursor
    await channel.close()
    assert len(found) == BURST
    assert set(found) == {e.event_id for e in events}


async def test_a_full_client_buffer_drops_exactly_the_shortfall(
    audit_app: AuditApp, db: asyncpg.Connection, make_event: EventFactory
) -> None:
    counts = AuditCounts()
    client = AuditClient(f"127.0.0.1:{audit_app.port}", capacity=500, counts=counts)
    await client.start()
    # The hot path never awaits, so the sender cannot drain the buffer meanwhile.
    results = [client.enqueue(make_event(user_id="overflow")) for _ in range(2_000)]
    await client.close(timeout=30)

    stored = await db.fetchval("SELECT count(*) FROM audit_events WHERE user_id = 'overflow'")
    assert results.count(True) == stored == 500
    received, written, dropped, queued = counts.snapshot()
    assert dropped == {"buffer_full": 2_000 - stored}
    assert (received, written, queued) == (2_000, stored, 0)


async def test_a_redelivered_batch_is_stored_once_and_acknowledged_again(
    stub: Any, db: asyncpg.Connection, make_event: EventFactory
) -> None:
    first = [make_event(user_id="again") for _ in range(5)]
    ack = await stub.IngestBatchUnary(audit_pb2.IngestBatch(sequence=1, events=first), timeout=5)
    assert (ack.sequence, ack.accepted, ack.code) == (1, 5, 0)

    # A resend after a lost ack, mixed with new events.
    mixed = [*first[:3], make_event(user_id="again")]
    ack = await stub.IngestBatchUnary(audit_pb2.IngestBatch(sequence=2, events=mixed), timeout=5)
    assert (ack.sequence, ack.accepted) == (2, 4)
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE user_id = 'again'") == 6


async def test_the_stream_acknowledges_each_batch_by_sequence(
    stub: Any, db: asyncpg.Connection, make_event: EventFactory
) -> None:
    batches = [
        audit_pb2.IngestBatch(sequence=seq, events=[make_event(user_id="stream")] * 1)
        for seq in (7, 8, 9)
    ]
    batches[1].events.append(make_event(user_id="stream"))
    acks = [ack async for ack in stub.IngestStream(iter(batches), timeout=10)]
    assert [(a.sequence, a.accepted, a.code) for a in acks] == [(7, 1, 0), (8, 2, 0), (9, 1, 0)]
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE user_id = 'stream'") == 4
