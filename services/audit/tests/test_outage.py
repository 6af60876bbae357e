"""The database goes down: events are held (within capacity), acknowledged only once
written after recovery; beyond capacity ingestion pushes back; nothing is dropped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

from gatehouse_audit.app import AuditApp
from gatehouse_audit.migrate import upgrade
from gatehouse_kit.audit_metrics import AUDIT_COUNTS
from gatehouse_kit.grpc_client import open_channel
from gatehouse_protos.audit.v1 import audit_pb2, audit_pb2_grpc
from tests.harness.databases import create_database
from tests.harness.private import PrivatePostgres

from .conftest import EventFactory, wait_until


@pytest.fixture
async def outage_db(private_postgres: PrivatePostgres) -> str:
    url = await create_database(private_postgres.url, "audit_outage")
    await asyncio.to_thread(upgrade, url)
    # This server commits asynchronously and is stopped as if it crashed: make the
    # schema durable first, as it would long be on a real server.
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return url


@pytest.fixture
async def outage_app(outage_db: str, start_audit: Any) -> AuditApp:
    app: AuditApp = await start_audit(outage_db, queue_capacity=1_000, batch_size=200)
    return app


@pytest.fixture
async def outage_stub(outage_app: AuditApp) -> AsyncIterator[Any]:
    channel = open_channel(f"127.0.0.1:{outage_app.port}", max_attempts=1)
    yield audit_pb2_grpc.AuditServiceStub(channel)
    await channel.close()


async def test_events_are_held_while_the_database_is_down_and_written_after(
    private_postgres: PrivatePostgres,
    outage_db: str,
    outage_app: AuditApp,
    outage_stub: Any,
    make_event: EventFactory,
) -> None:
    writer = outage_app.writer
    assert writer is not None
    received0, written0, dropped0, _ = AUDIT_COUNTS.snapshot()
    await asyncio.to_thread(private_postgres.stop)

    batches = [
        audit_pb2.IngestBatch(sequence=n, events=[make_event() for _ in range(300)])
        for n in range(3)
    ]
    calls = [asyncio.ensure_future(outage_stub.IngestBatchUnary(b, timeout=60)) for b in batches]
    await wait_until(lambda: writer.held == 900)

    # Beyond capacity the service pushes back, on both RPCs, and keeps nothing.
    extra = audit_pb2.IngestBatch(sequence=9, events=[make_event() for _ in range(200)])
    with pytest.raises(grpc.aio.AioRpcError) as full:
        await outage_stub.IngestBatchUnary(extra, timeout=5)
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    acks = [a async for a in outage_stub.IngestStream(iter([extra]), timeout=5)]
    assert [(a.sequence, a.accepted, a.code) for a in acks] == [
        (9, 0, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    ]
    # Queries cannot be answered and say so.
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await outage_stub.GetEvent(audit_pb2.GetEventRequest(id=1), timeout=10)
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not any(call.done() for call in calls)

    await asyncio.to_thread(private_postgres.start)
    acked = await asyncio.gather(*calls)
    assert [(a.sequence, a.accepted, a.code) for a in acked] == [
        (0, 300, 0),
        (1, 300, 0),
        (2, 300, 0),
    ]

    conn = await asyncpg.connect(outage_db)
    try:
        stored = {
            r["event_id"] for r in await conn.fetch("SELECT event_id::text FROM audit_events")
        }
    finally:
        await conn.close()
    assert stored == {e.event_id for b in batches for e in b.events}
    received, written, dropped, _ = AUDIT_COUNTS.snapshot()
    assert (received - received0, written - written0, dropped) == (900, 900, dropped0)
