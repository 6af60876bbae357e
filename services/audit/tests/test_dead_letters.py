"""One bad event never takes its batch with it: against real PostgreSQL, an event that
can never be stored is set aside in `audit_dead_letters` (escaped) and every other event
of the batch is written."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import asyncpg
import grpc
from prometheus_client import REGISTRY

from gatehouse_audit.events import COLUMNS, Row, to_rows
from gatehouse_audit.pipeline import AuditBatchWriter
from gatehouse_audit.repository import AuditRepository
from gatehouse_kit.audit_metrics import AuditCounts
from gatehouse_protos.audit.v1 import audit_pb2

from .conftest import EventFactory


def _dead_letters(reason: str) -> float:
    return REGISTRY.get_sample_value("audit_dead_letters_total", {"reason": reason}) or 0.0


async def test_a_batch_the_database_refuses_is_split_down_to_the_refused_rows(
    audit_db: str, db: asyncpg.Connection, make_event: EventFactory
) -> None:
    user = f"split-{uuid.uuid4().hex[:8]}"
    events = [make_event(user_id=user, request_id=f"ok-{n}") for n in range(13)]
    rows, dead = to_rows(events)
    assert dead == []
    # Rows that pass the service's own checks but not PostgreSQL: a NUL character in a
    # text, and an action_type beyond the B-tree index's entry size (random, so that
    # compression cannot bring it under).
    nul_id, huge_id = str(uuid.uuid4()), str(uuid.uuid4())
    nul = _with(rows[0], event_id=nul_id, resource="/authors\x00", request_id="bad-nul")
    huge = _with(
        rows[0], event_id=huge_id, action_type=secrets.token_hex(4500), request_id="bad-huge"
    )
    mixed: list[Row] = [*rows[:5], nul, *rows[5:9], huge, *rows[9:]]
    counts = AuditCounts()
    before = _dead_letters("refused")
    repository = await AuditRepository.connect(audit_db, max_size=2)
    writer = AuditBatchWriter(
        repository, capacity=100, batch_size=100, batch_interval=0.01, writers=1, counts=counts
    )
    writer.start()
    try:
        # Two ingest batches written together: the refusal touches neither's other rows.
        first = await writer.submit(mixed[:8])
        second = await writer.submit(mixed[8:])
        await first
        await second
    finally:
        await writer.drain(5)
        await repository.close()

    stored = await db.fetch("SELECT request_id FROM audit_events WHERE user_id = $1", user)
    assert sorted(r["request_id"] for r in stored) == sorted(f"ok-{n}" for n in range(13))
    letters = {
        str(r["event_id"]): r
        for r in await db.fetch(
            "SELECT event_id, reason, event FROM audit_dead_letters WHERE event_id = ANY($1)",
            [uuid.UUID(nul_id), uuid.UUID(huge_id)],
        )
    }
    assert set(letters) == {nul_id, huge_id}
    nul_content = json.loads(letters[nul_id]["event"])
    assert nul_content["resource"] == "/authors\\u0000"
    assert nul_content["request_id"] == "bad-nul"
    assert "CharacterNotInRepertoire" in letters[nul_id]["reason"]
    huge_content = json.loads(letters[huge_id]["event"])
    assert huge_content["action_type"].endswith("…[9000 chars]")
    assert len(huge_content["action_type"]) <= 512
    assert "ProgramLimitExceeded" in letters[huge_id]["reason"]
    # Set aside is stored: nothing counted as dropped, both counted as dead letters.
    assert counts.snapshot() == (15, 15, {}, 0)
    assert _dead_letters("refused") - before == 2


async def test_an_invalid_event_is_set_aside_and_its_batch_is_acknowledged(
    stub: Any, db: asyncpg.Connection, make_event: EventFactory
) -> None:
    user = f"invalid-{uuid.uuid4().hex[:8]}"
    bad = [
        make_event(user_id=user, event_id="not-a-uuid", request_id="bad-id"),
        make_event(user_id=user, outcome=audit_pb2.OUTCOME_UNSPECIFIED, request_id="bad-out"),
        make_event(user_id=user, user_agent="nul\x00byte", request_id="bad-nul"),
        make_event(user_id=user, trace_id="A" * 32, request_id="bad-trace"),
    ]
    good = [make_event(user_id=user, request_id=f"ok-{n}") for n in range(4)]
    before = _dead_letters("invalid")
    batch = audit_pb2.IngestBatch(sequence=1, events=[good[0], *bad[:2], good[1]])
    ack = await stub.IngestBatchUnary(batch, timeout=5)
    assert (ack.sequence, ack.accepted, ack.code) == (1, 4, 0)
    streamed = audit_pb2.IngestBatch(sequence=3, events=[good[2], bad[2], good[3], bad[3]])
    acks = [ack async for ack in stub.IngestStream(iter([streamed]), timeout=5)]
    assert [(a.sequence, a.accepted, a.code) for a in acks] == [(3, 4, 0)]

    stored = await db.fetch("SELECT request_id FROM audit_events WHERE user_id = $1", user)
    assert sorted(r["request_id"] for r in stored) == ["ok-0", "ok-1", "ok-2", "ok-3"]
    letters = await db.fetch(
        "SELECT event_id, reason, event FROM audit_dead_letters WHERE event->>'user_id' = $1",
        user,
    )
    by_request = {json.loads(r["event"])["request_id"]: r for r in letters}
    assert set(by_request) == {"bad-id", "bad-out", "bad-nul", "bad-trace"}
    assert by_request["bad-id"]["reason"].startswith("event_id must be a UUID")
    assert json.loads(by_request["bad-id"]["event"])["event_id"] == "not-a-uuid"
    assert by_request["bad-out"]["reason"].startswith("outcome must be")
    assert by_request["bad-nul"]["reason"] == "user_agent must not contain NUL characters"
    assert json.loads(by_request["bad-nul"]["event"])["user_agent"] == "nul\\u0000byte"
    assert str(by_request["bad-nul"]["event_id"]) == bad[2].event_id
    assert by_request["bad-trace"]["reason"] == "trace_id must be 32 lowercase hex digits, or empty"
    assert _dead_letters("invalid") - before == 4

    # A redelivery (a lost ack) sets the same event aside once.
    again = await stub.IngestBatchUnary(
        audit_pb2.IngestBatch(sequence=4, events=[bad[2]]), timeout=5
    )
    assert (again.accepted, again.code) == (1, grpc.StatusCode.OK.value[0])
    count = await db.fetchval(
        "SELECT count(*) FROM audit_dead_letters WHERE event_id = $1", uuid.UUID(bad[2].event_id)
    )
    assert count == 1


def _with(row: Row, **fields: Any) -> Row:
    values = dict(zip(COLUMNS, row, strict=True))
    values.update(fields)
    return tuple(values[c] for c in COLUMNS)
