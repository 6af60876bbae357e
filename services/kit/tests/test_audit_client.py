"""The gateway's audit client against a scripted AuditService over loopback gRPC:
non-blocking enqueue, acknowledgements, refusals, broken streams, shutdown, counts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gatehouse_kit.audit_client import AuditClient
from gatehouse_kit.audit_metrics import AuditCounts
from gatehouse_kit.grpc_server import GrpcService
from gatehouse_protos.audit.v1 import audit_pb2, audit_pb2_grpc

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


class ScriptedAudit(audit_pb2_grpc.AuditServiceServicer):
    """Acks every batch unless told to refuse some, reject some, or break the stream."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.stored: set[str] = set()
        self.refuse = 0
        self.reject = 0
        self.break_streams = 0
        self.streams = 0
        self.target = 0
        self.reached = asyncio.Event()

    async def IngestStream(
        self, request_iterator: AsyncIterator[audit_pb2.IngestBatch], context: Any
    ) -> AsyncIterator[audit_pb2.IngestAck]:
        self.streams += 1
        async for batch in request_iterator:
            self.received += [e.event_id for e in batch.events]
            if self.break_streams:
                self.break_streams -= 1
                await context.abort(grpc.StatusCode.UNAVAILABLE, "gone")
            if self.refuse:
                self.refuse -= 1
                yield audit_pb2.IngestAck(sequence=batch.sequence, code=RESOURCE_EXHAUSTED)
                continue
            if self.reject:
                self.reject -= 1
                yield audit_pb2.IngestAck(sequence=batch.sequence, code=INVALID_ARGUMENT)
                continue
            self.stored.update(e.event_id for e in batch.events)
            if len(self.stored) >= self.target:
                self.reached.set()
            yield audit_pb2.IngestAck(sequence=batch.sequence, accepted=len(batch.events))


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedAudit, str]]:
    servicer = ScriptedAudit()  # type: ignore[abstract]  # only IngestStream is served

    def register(server: grpc.aio.Server) -> list[str]:
        audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)
        return ["gatehouse.audit.v1.AuditService"]

    service = GrpcService(register, host="127.0.0.1", port=0, grace_seconds=1)
    await service.start()
    yield servicer, f"127.0.0.1:{service.port}"
    await service.stop()


def _events(n: int) -> list[audit_pb2.AuditEvent]:
    return [audit_pb2.AuditEvent(action_type="GET /authors") for _ in range(n)]


async def test_enqueued_events_are_sent_and_counted_written_once_acknowledged(
    scripted: tuple[ScriptedAudit, str],
) -> None:
    servicer, target = scripted
    counts = AuditCounts()
    client = AuditClient(target, batch_size=100, flush_interval=0.01, counts=counts)
    await client.start()
    events = _events(250)
    assert all(client.enqueue(e) for e in events)
    # enqueue filled in what the producer left empty.
    assert all(e.event_id and e.HasField("timestamp") for e in events)
    assert len({e.event_id for e in events}) == 250
    await client.close(timeout=5)
    assert servicer.stored == {e.event_id for e in events}
    assert counts.snapshot() == (250, 250, {}, 0)


async def test_a_partial_batch_goes_out_after_the_flush_interval(
    scripted: tuple[ScriptedAudit, str],
) -> None:
    servicer, target = scripted
    servicer.target = 3
    counts = AuditCounts()
    client = AuditClient(target, batch_size=1000, flush_interval=0.05, counts=counts)
    await client.start()
    for event in _events(3):
        client.enqueue(event)
    await asyncio.wait_for(servicer.reached.wait(), 5)
    await client.close(timeout=5)
    assert counts.snapshot() == (3, 3, {}, 0)


async def test_refused_batches_are_sent_again_until_stored(
    scripted: tuple[ScriptedAudit, str],
) -> None:
    servicer, target = scripted
    servicer.refuse = 3
    counts = AuditCounts()
    client = AuditClient(target, batch_size=10, flush_interval=0.01, counts=counts)
    await client.start()
    events = _events(40)
    for event in events:
        client.enqueue(event)
    await client.close(timeout=10)
    assert servicer.stored == {e.event_id for e in events}
    assert counts.snapshot() == (40, 40, {}, 0)


async def test_a_broken_stream_is_reopened_and_unacknowledged_batches_resent(
    scripted: tuple[ScriptedAudit, str],
) -> None:
    servicer, target = scripted
    servicer.break_streams = 2
    counts = AuditCounts()
    client = AuditClient(
        target, batch_size=10, flush_interval=0.01, reconnect_max_seconds=0.2, counts=counts
    )
    await client.start()
    events = _events(50)
    for event in events:
        client.enqueue(event)
    await client.close(timeout=10)
    assert servicer.streams >= 3
    assert servicer.stored == {e.event_id for e in events}
    # Resent batches arrive more than once; the service stores each event_id once.
    assert len(servicer.received) > 50
    assert counts.snapshot() == (50, 50, {}, 0)


async def test_invalid_batches_are_dropped_as_rejected(
    scripted: tuple[ScriptedAudit, str],
) -> None:
    servicer, target = scripted
    servicer.reject = 1
    counts = AuditCounts()
    client = AuditClient(target, batch_size=10, flush_interval=0.01, counts=counts)
    await client.start()
    for event in _events(10):
        client.enqueue(event)
    await client.close(timeout=5)
    assert counts.snapshot() == (10, 0, {"rejected": 10}, 0)


async def test_a_full_buffer_drops_and_counts_without_waiting() -> None:
    counts = AuditCounts()
    client = AuditClient("127.0.0.1:1", capacity=3, counts=counts)
    results = [client.enqueue(e) for e in _events(5)]
    assert results == [True, True, True, False, False]
    assert client.held == 3
    assert counts.snapshot() == (5, 0, {"buffer_full": 2}, 3)
    await client.close(timeout=0)
    assert counts.snapshot() == (5, 0, {"buffer_full": 2, "shutdown": 3}, 0)


async def test_close_gives_up_on_an_unreachable_service_within_its_timeout() -> None:
    counts = AuditCounts()
    client = AuditClient("127.0.0.1:1", flush_interval=0.01, counts=counts)
    await client.start()
    for event in _events(10):
        client.enqueue(event)
    async with asyncio.timeout(3):
        await client.close(timeout=0.3)
    assert counts.snapshot() == (10, 0, {"shutdown": 10}, 0)
    assert client.enqueue(audit_pb2.AuditEvent()) is False
    assert counts.snapshot() == (11, 0, {"shutdown": 10, "closed": 1}, 0)


async def test_every_scrape_balances_received_with_written_dropped_and_queued(
    scripted: tuple[ScriptedAudit, str],
) -> None:
    servicer, target = scripted
    servicer.refuse = 5
    registry = CollectorRegistry()
    counts = AuditCounts()
    registry.register(counts)
    client = AuditClient(
        target, capacity=3_000, batch_size=200, flush_interval=0.005, counts=counts
    )
    await client.start()

    balanced: list[bool] = []
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            values: dict[str, float] = {}
            for family in text_string_to_metric_families(generate_latest(registry).decode()):
                for sample in family.samples:
                    values[sample.name] = values.get(sample.name, 0) + sample.value
            balanced.append(
                values["audit_logs_total"]
                == values["audit_logs_written_total"]
                + values.get("audit_logs_dropped_total", 0)
                + values["audit_queue_size"]
            )

    scraper = threading.Thread(target=scrape)
    scraper.start()
    for _ in range(20):
        for event in _events(250):
            client.enqueue(event)  # some of these overflow the buffer: counted drops
        await asyncio.sleep(0)
    await client.close(timeout=10)
    done.set()
    scraper.join()
    received, written, dropped, queued = counts.snapshot()
    assert received == 5_000
    assert registry.get_sample_value("audit_queue_capacity") == 3_000
    # Declared at 0 from the start, every drop reason is a series before its first drop.
    assert registry.get_sample_value("audit_logs_dropped_total", {"reason": "shutdown"}) == 0
    assert written + dropped.get("buffer_full", 0) == 5_000
    assert queued == 0
    assert len(balanced) > 5
    assert all(balanced)
