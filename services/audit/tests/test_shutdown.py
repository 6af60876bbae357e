"""SIGTERM in the middle of a burst: the service, a real process, stops taking batches,
writes what it holds, and exits; nothing it acknowledged is lost. Scrapes of its
/metrics during the burst always satisfy received = written + dropped + queued."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import asyncpg
import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from gatehouse_kit.grpc_client import open_channel
from gatehouse_protos.audit.v1 import audit_pb2, audit_pb2_grpc
from tests.harness.private import free_port

from .conftest import EventFactory

BATCH = 500
BATCHES = 120
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


@pytest.fixture
def service_process(audit_db: str) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "AUDIT_DATABASE_URL": audit_db,
        "AUDIT_GRPC_PORT": str(grpc_port),
        "AUDIT_METRICS_PORT": str(metrics_port),
        "AUDIT_SHUTDOWN_GRACE_SECONDS": "30",
        "AUDIT_QUEUE_CAPACITY": "20000",
        "AUDIT_RETENTION_DAYS": "36500",
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "gatehouse_audit"], env=env)
    yield proc, grpc_port, metrics_port
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def _invariant_holds(text: str) -> tuple[bool, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("audit_logs_total", "audit_logs_written_total", "audit_queue_size"):
                values[sample.name] = sample.value
            elif sample.name == "audit_logs_dropped_total":
                values["dropped"] = values.get("dropped", 0) + sample.value
    total = values["audit_logs_total"]
    rest = (
        values["audit_logs_written_total"] + values.get("dropped", 0) + values["audit_queue_size"]
    )
    return total == rest, total


async def test_sigterm_mid_burst_loses_nothing_acknowledged(
    service_process: tuple[subprocess.Popen[bytes], int, int],
    audit_db: str,
    make_event: EventFactory,
) -> None:
    proc, grpc_port, metrics_port = service_process
    channel = open_channel(f"127.0.0.1:{grpc_port}", max_attempts=1)
    health = health_pb2_grpc.HealthStub(channel)
    await health.Check(health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True)
    stub = audit_pb2_grpc.AuditServiceStub(channel)

    batches = {
        seq: audit_pb2.IngestBatch(
            sequence=seq, events=[make_event(user_id="sigterm") for _ in range(BATCH)]
        )
        for seq in range(1, BATCHES + 1)
    }

    async def requests() -> AsyncIterator[audit_pb2.IngestBatch]:
        for batch in batches.values():
            yield batch

    scrapes: list[tuple[bool, float]] = []
    stop_scraping = asyncio.Event()

    async def scrape() -> None:
        async with httpx.AsyncClient() as http:
            while not stop_scraping.is_set():
                try:
                    response = await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
                except httpx.TransportError:
                    assert terminated, "/metrics went away before SIGTERM"
                    return
                scrapes.append(_invariant_holds(response.text))

    terminated = False
    scraper = asyncio.create_task(scrape())
    acked: list[int] = []
    stream_error: grpc.StatusCode | None = None
    try:
        async for ack in stub.IngestStream(requests(), timeout=60):
            if ack.code == 0:
                assert ack.accepted == BATCH
                acked.append(ack.sequence)
                if len(acked) == 10:
                    os.kill(proc.pid, signal.SIGTERM)
                    terminated = True
            else:
                # Refused (queue full, or shutting down): the sender keeps those events.
                assert ack.code in (RESOURCE_EXHAUSTED, UNAVAILABLE)
    except grpc.aio.AioRpcError as error:
        stream_error = error.code()
    finally:
        stop_scraping.set()
        await scraper
        await channel.close()

    assert await asyncio.to_thread(proc.wait, 40) == 0
    # The stream ended early (cleanly, or refused), so SIGTERM did land mid-burst.
    assert len(acked) < BATCHES
    assert stream_error is None or stream_error == grpc.StatusCode.UNAVAILABLE
    assert scrapes
    assert all(ok for ok, _ in scrapes)
    assert scrapes[-1][1] > 0

    conn = await asyncpg.connect(audit_db)
    try:
        stored = {
            r["event_id"]
            for r in await conn.fetch(
                "SELECT event_id::text FROM audit_events WHERE user_id = 'sigterm'"
            )
        }
    finally:
        await conn.close()
    acked_ids = {e.event_id for seq in acked for e in batches[seq].events}
    assert len(acked_ids) == len(acked) * BATCH
    assert acked_ids <= stored
