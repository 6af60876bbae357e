"""Retention: events and dead letters older than AUDIT_RETENTION_DAYS go, in bounded
batches; newer stay."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import REGISTRY

from gatehouse_audit.events import to_rows
from gatehouse_audit.repository import AuditRepository
from gatehouse_audit.retention import AuditRetention

from .conftest import EventFactory


async def _store(audit_db: str, make_event: EventFactory, user: str, ages: list[int]) -> None:
    now = datetime.now(UTC)
    repository = await AuditRepository.connect(audit_db, max_size=1)
    try:
        await repository.write(
            to_rows(make_event(user_id=user, when=now - timedelta(days=d)) for d in ages)[0]
        )
    finally:
        await repository.close()


async def _ages(db: asyncpg.Connection, user: str) -> list[int]:
    rows = await db.fetch(
        "SELECT extract(day FROM now() - timestamp)::int AS age FROM audit_events "
        "WHERE user_id = $1 ORDER BY age",
        user,
    )
    return [r["age"] for r in rows]


async def test_purge_deletes_only_expired_events_in_small_batches(
    audit_db: str, db: asyncpg.Connection, make_event: EventFactory
) -> None:
    await _store(audit_db, make_event, "purge", [1, 5, 29, 31, 40, 100] + [60] * 20)
    repository = await AuditRepository.connect(audit_db, max_size=1)
    try:
        retention = AuditRetention(repository, days=30, interval=3600, batch_size=7)
        deleted = await retention.purge()
    finally:
        await repository.close()
    assert deleted == 23
    assert await _ages(db, "purge") == [1, 5, 29]


async def test_the_running_service_applies_retention_on_its_own(
    audit_db: str, db: asyncpg.Connection, make_event: EventFactory, start_audit: Any
) -> None:
    await _store(audit_db, make_event, "periodic", [2, 10, 45, 90])
    before = REGISTRY.get_sample_value("audit_retention_deleted_total") or 0
    await start_audit(
        audit_db, retention_days=7, retention_interval_seconds=0.05, retention_delete_batch_size=2
    )
    # The service deletes on its own schedule; watch the table until it has.
    async with asyncio.timeout(10):
        while await _ages(db, "periodic") != [2]:  # noqa: ASYNC110 (the state is in the table)
            await asyncio.sleep(0.02)
    after = REGISTRY.get_sample_value("audit_retention_deleted_total") or 0
    assert after - before >= 3


async def test_dead_letters_outliving_retention_go_too(
    audit_db: str, db: asyncpg.Connection
) -> None:
    ages = [1, 20, 31, 45, 90]
    for age in ages:
        await db.execute(
            "INSERT INTO audit_dead_letters (event_id, received_at, reason, event) "
            "VALUES ($1, now() - make_interval(days => $2), 'retention test', '{}')",
            uuid.uuid4(),
            age,
        )
    repository = await AuditRepository.connect(audit_db, max_size=1)
    try:
        deleted = await AuditRetention(repository, days=30, interval=3600, batch_size=2).purge()
    finally:
        await repository.close()
    assert deleted == 3
    kept = await db.fetch(
        "SELECT extract(day FROM now() - received_at)::int AS age FROM audit_dead_letters "
        "WHERE reason = 'retention test' ORDER BY age"
    )
    assert [r["age"] for r in kept] == [1, 20]
