"""Unit tests of the batch writer's failure handling, with a scripted stand-in for
the repository: what is retried, what is held, what is dropped and how it is counted."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence
from typing import Any, cast

import asyncpg
import pytest

from gatehouse_audit.events import COLUMNS, DeadLetter, Row, row_dead_letter
from gatehouse_audit.pipeline import AuditBatchWriter
from gatehouse_audit.repository import AuditRepository
from gatehouse_kit.audit_metrics import AuditCounts
from gatehouse_kit.errors import InvalidArgument, ResourceExhausted, Unavailable
from gatehouse_kit.logging import configure_logging


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


def _rows(count: int) -> list[Row]:
    return [(n, *([""] * (len(COLUMNS) - 1))) for n in range(count)]


ROWS = _rows(5)


async def test_every_stored_event_logs_one_line_with_its_request_id_and_trace_id() -> None:
    stream = io.StringIO()
    configure_logging("audit-test", stream=stream)
    # The third event's request came without a trace context.
    fields = [
        {"request_id": f"req-{n}", "trace_id": f"{n:032x}" if n < 2 else ""} for n in range(3)
    ]
    rows = [tuple(event.get(column, "") for column in COLUMNS) for event in fields]
    writer = _writer(ScriptedRepository(), AuditCounts())
    await (await writer.submit(rows))
    await writer.drain(1)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    written = [
        (line["request_id"], line["trace_id"])
        for line in lines
        if line["msg"] == "audit_event_written"
    ]
    assert written == [("req-0", f"{0:032x}"), ("req-1", f"{1:032x}"), ("req-2", None)]


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


class RefusingRepository(ScriptedRepository):
    """Refuses (as PostgreSQL would, SQLSTATE 22021) every write holding a row in `bad`,
    and fails the first write holding a row in `flaky` once with a transient error."""

    def __init__(self, bad: set[int], flaky: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.bad = bad
        self.flaky = set(flaky)
        self.letters: list[DeadLetter] = []

    async def write(self, rows: Sequence[Row]) -> None:
        self.attempts += 1
        numbers = {row[0] for row in rows}
        if numbers & self.bad:
            raise asyncpg.CharacterNotInRepertoireError("invalid byte sequence")
        if numbers & self.flaky:
            self.flaky -= numbers
            raise asyncpg.SerializationError("could not serialize access")
        self.batches.append(len(rows))

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


async def test_a_refused_batch_is_split_down_to_its_refused_rows_without_retrying_them() -> None:
    repo = RefusingRepository(bad={37}, flaky=frozenset({80}))
    counts = AuditCounts()
    writer = _writer(repo, counts, capacity=200, batch_size=100)
    await (await writer.submit(_rows(100)))
    assert [letter.content for letter in repo.letters] == [
        row_dead_letter(_rows(100)[37], "x").content
    ]
    assert repo.letters[0].kind == "refused"
    assert "CharacterNotInRepertoireError" in repo.letters[0].reason
    assert sum(repo.batches) == 99
    # A bisection: about two writes per halving, never a retry of a refused write; the
    # one transient failure was retried.
    assert repo.attempts <= 2 * 7 + 2
    assert counts.snapshot() == (100, 100, {}, 0)
    await writer.drain(1)


async def test_rows_committed_before_a_failure_count_as_written() -> None:
    # Splitting around row 3 commits rows 0-4 but 3; then rows 5-9 fail for good.
    repo = RefusingRepository(bad={3})
    counts = AuditCounts()
    writer = _writer(repo, counts, retry_attempts=2)
    original = repo.write

    async def write(rows: Sequence[Row]) -> None:
        if rows[0][0] >= 5:
            repo.attempts += 1
            raise ValueError("bad batch")
        await original(rows)

    repo.write = write  # type: ignore[method-assign]
    done = await writer.submit(_rows(10))
    with pytest.raises(Unavailable):
        await done
    written = sum(repo.batches)
    assert written == 4
    assert counts.snapshot() == (10, written, {"write_failed": 10 - written}, 0)
    await writer.drain(1)
