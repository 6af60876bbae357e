"""Audit ingestion: sustained events/s end to end beside raw COPY of the same rows.

End to end: the gateway's AuditClient (this process) → gRPC IngestStream → the audit
service (a separate process, default settings) → PostgreSQL, timed from the first
`enqueue` to the last acknowledgement, i.e. until every event is committed. The
baseline, in the same run: `copy_records_to_table` of the same rows, in batches of the
service's batch size on one connection, into an identical freshly migrated table.
Loss is checked count for count (client counters and rows in the table).

Run: `uv run python -m benchmarks audit`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from benchmarks.common import Figure, Measurement, write_result
from benchmarks.processes import grpc_serving, python_module
from gatehouse_audit.events import COLUMNS, to_rows, to_timestamp
from gatehouse_audit.migrate import upgrade
from gatehouse_audit.settings import Settings
from gatehouse_kit.audit_client import AuditClient
from gatehouse_kit.audit_metrics import AuditCounts
from gatehouse_kit.redaction import request_data_json
from gatehouse_protos.audit.v1 import audit_pb2
from tests.harness.backends import postgres_backend
from tests.harness.databases import create_database, drop_database
from tests.harness.private import free_port

EVENTS = 200_000
# Below the client's and the service's capacity: nothing may be dropped or refused.
CAPACITY = EVENTS
TARGET_SHARE = 0.30


def _events(n: int) -> list[audit_pb2.AuditEvent]:
    """Events shaped like the gateway's: a user, a route, redacted request data."""
    start = datetime.now(UTC) - timedelta(hours=1)
    data = request_data_json({"name": "Ada Lovelace", "password": "x", "tags": ["a", "b"]})
    return [
        audit_pb2.AuditEvent(
            event_id=str(uuid.uuid4()),
            timestamp=to_timestamp(start + timedelta(microseconds=i * 10)),
            user_id=f"user-{i % 500}",
            username=f"name-{i % 500}",
            user_roles=["get-authors", "create-author"],
            action_type=("GET /authors", "POST /authors", "WS:GET_AUTHORS")[i % 3],
            resource=f"/authors/{i % 1000}",
            outcome=audit_pb2.OUTCOME_SUCCESS,
            ip_address="10.0.0.7",
            user_agent="Mozilla/5.0 (X11; Linux x86_64)",
            request_id=str(uuid.uuid4()),
            request_data=data,
            response_status=200,
            duration_ms=3.2,
        )
        for i in range(n)
    ]


async def _raw_copy(url: str, rows: list[Any], batch_size: int) -> float:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        for i in range(0, len(rows), batch_size):
            await conn.copy_records_to_table(
                "audit_events", records=rows[i : i + batch_size], columns=COLUMNS
            )
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _end_to_end(url: str, events: list[audit_pb2.AuditEvent]) -> tuple[float, AuditCounts]:
    grpc_port = free_port()
    target = f"127.0.0.1:{grpc_port}"
    env = {
        "AUDIT_DATABASE_URL": url,
        "AUDIT_GRPC_PORT": str(grpc_port),
        "AUDIT_METRICS_PORT": str(free_port()),
        "AUDIT_QUEUE_CAPACITY": str(CAPACITY),
    }
    async with python_module("gatehouse_audit", env, grpc_serving(target)):
        counts = AuditCounts()
        client = AuditClient(target, capacity=CAPACITY, batch_size=1000, counts=counts)
        await client.start()
        started = time.perf_counter()
        for i in range(0, len(events), 1000):
            for event in events[i : i + 1000]:
                client.enqueue(event)
            await asyncio.sleep(0)  # let the sender run, as a busy gateway's loop would
        await client.close(timeout=120)
        return time.perf_counter() - started, counts


async def run() -> dict[str, Any]:
    """Measure both paths on fresh databases and write results/audit.json."""
    batch_size = Settings().batch_size
    with postgres_backend() as backend:
        raw_db = await create_database(backend.url, "bench_audit_raw")
        e2e_db = await create_database(backend.url, "bench_audit_e2e")
        try:
            for url in (raw_db, e2e_db):
                await asyncio.to_thread(upgrade, url)
            events = _events(EVENTS)
            raw_seconds = await _raw_copy(raw_db, to_rows(events)[0], batch_size)
            e2e_seconds, counts = await _end_to_end(e2e_db, events)
            conn = await asyncpg.connect(e2e_db)
            try:
                stored = await conn.fetchval("SELECT count(*) FROM audit_events")
            finally:
                await conn.close()
        finally:
            await drop_database(backend.url, raw_db)
            await drop_database(backend.url, e2e_db)

    received, written, dropped, queued = counts.snapshot()
    lost = EVENTS - stored
    raw = Measurement("raw copy_records_to_table", EVENTS, raw_seconds)
    e2e = Measurement("end to end (client → gRPC → PostgreSQL)", EVENTS, e2e_seconds)
    share = e2e.rate / raw.rate
    figures = [
        Figure(
            name="audit ingestion, end to end",
            value=round(e2e.rate, 1),
            unit="events/s",
            baseline="raw copy_records_to_table, same rows, same run",
            baseline_value=round(raw.rate, 1),
            target=f">= {TARGET_SHARE:.0%} of raw COPY, zero loss below capacity",
            met=share >= TARGET_SHARE and lost == 0 and not dropped and written == EVENTS,
        )
    ]
    result = write_result(
        "audit",
        figures,
        [raw, e2e],
        command="uv run python -m benchmarks audit",
        events=EVENTS,
        share_of_raw_copy=round(share, 3),
        loss={
            "received": received,
            "acknowledged": written,
            "dropped": dropped,
            "left_queued": queued,
            "rows_stored": stored,
            "lost": lost,
        },
    )
    print(
        f"end to end {e2e.rate:,.0f} events/s, raw COPY {raw.rate:,.0f} events/s "
        f"({share:.0%}); stored {stored}/{EVENTS}, dropped {dropped}"
    )
    return result
