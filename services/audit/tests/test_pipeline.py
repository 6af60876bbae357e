"""Unit tests of the batch writer's failure handling, with a scripted stand-in for
the repository: what is retried, what is held, what is dropped and how it is counted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest

from gatehouse_audit.events import Row
from gatehouse_audit.pipeline import AuditBatchWriter
from gatehouse_audit.repository import AuditRepository
from gatehouse_kit.audit_metrics import AuditCounts
from gatehouse_kit.errors import InvalidArgument, ResourceExhausted, Unavailable


class ScriptedRepository:
    """Raises the scripted errors in turn, then stores; or blocks while `gate` is clear."""

    def __init__(self, errors: Sequence[BaseException] = ()) -> None:
        self.errors = list(errors)
        self.attempts = 0
        self.batches: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, rows: Sequence[Row]) -> None:
        self.attempts += 1
        await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        self.batches.append(len(rows))


def _writer(repo: ScriptedRepository, counts: AuditCounts, **kwargs: Any) -> AuditBatchWriter:
    options: dict[str, Any] = {
        "capacity": 100,
        "batch_size": 10,
        "batch_interval": 0.01,
        "writers": 1,
        "retry_attempts": 3,
        "retry_initial": 0.001,
        "retry_max": 0.002,
        **kwargs,
    }
    writer = AuditBatchWriter(cast(AuditRepository, repo), counts=counts, **options)
    writer.start()
    return writer


ROWS: list[Row] = [(n,) for n in range(5)]


async def test_a_batch_failing_every_attempt_is_dropped_as_write_failed() -> None:
    repo = ScriptedRepository([ValueError("bad row")] * 3)
    counts = AuditCounts()
    writer = _writer(repo, counts)
    done = await writer.submit(ROWS)
    with pytest.raises(Unavailable):
        await done
    assert repo.attempts == 3
    assert counts.snapshot() == (5, 0, {"write_failed": 5}, 0)
    assert writer.held == 0
    await writer.drain(1)


async def test_an_unreachable_database_holds_the_batch_until_it_answers() -> None:
    # Many more connection failures than retry attempts: still not dropped.
    repo = ScriptedRepository([ConnectionRefusedError()] * 10)
    counts = AuditCounts()
    writer = _writer(repo, counts)
    await (await writer.submit(ROWS))
    assert repo.attempts == 11
    assert counts.snapshot() == (5, 5, {}, 0)
    await writer.drain(1)


async def test_a_full_queue_refuses_whole_batches_and_shutdown_refuses_all() -> None:
    repo = ScriptedRepository()
    repo.gate.clear()
    counts = AuditCounts()
    writer = _writer(repo, counts, capacity=12)
    first = await writer.submit(ROWS)
    second = await writer.submit(ROWS)
    with pytest.raises(ResourceExhausted):
        await writer.submit(ROWS)
    with pytest.raises(InvalidArgument):
        await writer.submit(ROWS * 3)
    assert counts.snapshot() == (10, 0, {}, 10)
    writer.stop_accepting()
    with pytest.raises(Unavailable):
        await writer.submit(ROWS[:1])
    repo.gate.set()
    await writer.drain(1)
    assert first.done()
    assert second.done()
    assert counts.snapshot() == (10, 10, {}, 0)


async def test_what_cannot_be_written_within_the_grace_period_is_counted_as_shutdown() -> None:
    repo = ScriptedRepository()
    repo.gate.clear()
    counts = AuditCounts()
    writer = _writer(repo, counts)
    futures = [await writer.submit(ROWS) for _ in range(4)]
    await writer.drain(0.05)
    assert counts.snapshot() == (20, 0, {"shutdown": 20}, 0)
    for future in futures:
        with pytest.raises(Unavailable):
            await future


async def test_rows_are_gathered_into_batches_of_batch_size() -> None:
    repo = ScriptedRepository()
    repo.gate.clear()
    counts = AuditCounts()
    writer = _writer(repo, counts, batch_size=10, batch_interval=5.0)
    futures = [await writer.submit(ROWS) for _ in range(6)]
    repo.gate.set()
    await asyncio.gather(*futures)
    # The first write took the first two groups; the rest came in full batches.
    assert repo.batches == [10, 10, 10]
    await writer.drain(1)
