"""The ingestion pipeline: a bounded queue in front of batch writers using COPY.

`submit` admits a group of rows (one ingest batch) whole or not at all and returns
a future that completes when the rows are committed. Writers take queued groups
until `batch_size` rows are gathered or the oldest has waited `batch_interval`,
and write them with one COPY.

- Queue full: `submit` raises ResourceExhausted; nothing was taken. A group larger
  than the whole capacity is InvalidArgument (it could never be admitted).
- Database unreachable: the writer keeps the batch and retries with backoff until
  the database answers again; the events stay held (and count towards capacity),
  their acknowledgements wait.
- Rows the database refuses (a data exception, an integrity violation, an oversized
  entry: `is_refusal`): the batch is split in halves, each written on its own, down to
  the single rows that are refused; those go to the dead-letter table with the invalid
  events that `to_rows` set aside, and count as written (and in
  `audit_dead_letters_total`). Everything else of the batch is stored.
- Any other write failure: retried `retry_attempts` times with backoff, then the
  batch is dropped, counted with reason="write_failed" (rows committed by an earlier
  half of a split count as written), and its futures fail.
- `drain(timeout)`: stop admitting, write what is held; what is still held at the
  timeout is dropped with reason="shutdown" (never acknowledged, so the senders
  still have it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import stamina
import structlog
from prometheus_client import Counter

from gatehouse_audit.events import COLUMNS, DeadLetter, Row, row_dead_letter
from gatehouse_audit.repository import AuditRepository, is_refusal, is_unreachable
from gatehouse_kit.audit_metrics import AUDIT_BATCH_SIZE, AUDIT_COUNTS, AuditCounts
from gatehouse_kit.errors import InvalidArgument, ResourceExhausted, Unavailable

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

# Where a row holds what its stored event's log line carries.
_REQUEST_ID = COLUMNS.index("request_id")
_ACTION = COLUMNS.index("action_type")
_STATUS = COLUMNS.index("response_status")
_TRACE_ID = COLUMNS.index("trace_id")

AUDIT_DEAD_LETTERS = Counter(
    "audit_dead_letters_total",
    "Audit events set aside in the dead-letter table: invalid, or refused by the database.",
    ["reason"],
)
DEAD_LETTER_REASONS = ("invalid", "refused")
for _reason in DEAD_LETTER_REASONS:
    AUDIT_DEAD_LETTERS.labels(_reason)


@dataclass(eq=False)
class _Group:
    rows: Sequence[Row]
    dead: Sequence[DeadLetter]
    arrived: float
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class _Progress:
    """What a batch's write achieved so far: rows committed, dead letters found."""

    committed: int = 0
    dead: list[DeadLetter] = field(default_factory=list)


def _observe(future: asyncio.Future[None]) -> None:
    # A sender may have gone away; its future's outcome is then of no interest.
    if not future.cancelled():
        future.exception()


class AuditBatchWriter:
    """Bounded queue plus `writers` concurrent COPY writers (see module doc)."""

    def __init__(
        self,
        repository: AuditRepository,
        *,
        capacity: int,
        batch_size: int,
        batch_interval: float,
        writers: int = 2,
        retry_attempts: int = 5,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        counts: AuditCounts = AUDIT_COUNTS,
    ) -> None:
        self._repository = repository
        self._capacity = capacity
        self._batch_size = batch_size
        self._batch_interval = batch_interval
        self._writer_count = writers
        self._retry_attempts = retry_attempts
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._counts = counts
        counts.set_capacity(capacity)
        counts.declare_drop_reasons("write_failed", "shutdown")
        self._queue: deque[_Group] = deque()
        self._queued_rows = 0
        self._in_flight: set[tuple[_Group, ...]] = set()
        self._held = 0
        self._changed = asyncio.Condition()
        self._accepting = True
        self._draining = False
        self.stopped_accepting = asyncio.Event()
        self._database_down = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def held(self) -> int:
        """Events admitted and not yet written or dropped."""
        return self._held

    def start(self) -> None:
        """Start the writers."""
        self._tasks = [
            asyncio.create_task(self._write_loop(), name=f"audit-writer-{n}")
            for n in range(self._writer_count)
        ]

    async def submit(
        self, rows: Sequence[Row], dead: Sequence[DeadLetter] = ()
    ) -> asyncio.Future[None]:
        """Admit `rows` (and `dead`, for the dead-letter table); the future completes
        when all of them are committed."""
        count = len(rows) + len(dead)
        if not self._accepting:
            raise Unavailable("the audit service is shutting down")
        if count > self._capacity:
            # It would be refused for ever; the sender must split it.
            raise InvalidArgument("the batch is larger than the audit queue's capacity")
        if self._held + count > self._capacity:
            raise ResourceExhausted("the audit queue is full; retry later")
        group = _Group(rows, dead, time.monotonic())
        group.done.add_done_callback(_observe)
        self._queue.append(group)
        self._queued_rows += count
        self._held += count
        self._counts.received(count)
        async with self._changed:
            self._changed.notify_all()
        return group.done

    def stop_accepting(self) -> None:
        """Refuse further submissions (shutdown has begun)."""
        self._accepting = False
        self.stopped_accepting.set()

    async def drain(self, seconds: float) -> None:
        """Write what is held within `seconds`, then stop the writers."""
        self.stop_accepting()
        self._draining = True
        async with self._changed:
            self._changed.notify_all()
        try:
            async with asyncio.timeout(max(seconds, 0)):
                await asyncio.gather(*self._tasks)
        except TimeoutError:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        left = [*self._queue, *(g for groups in self._in_flight for g in groups)]
        if left:
            count = sum(_size(g) for g in left)
            log.error("audit events not written before shutdown", count=count)
            self._settle(left, error=Unavailable("the audit service shut down"), reason="shutdown")
        self._queue.clear()
        self._in_flight.clear()

    async def _write_loop(self) -> None:
        while True:
            groups = await self._take()
            if not groups:
                return
            # Kept while being written, so that a drain cut short can account for them.
            self._in_flight.add(groups)
            await self._write(groups)
            self._in_flight.discard(groups)

    async def _take(self) -> tuple[_Group, ...]:
        """The next groups to write together; empty once draining and nothing is left."""
        async with self._changed:
            while True:
                if not self._queue:
                    if self._draining:
                        return ()
                    await self._changed.wait()
                    continue
                due = self._queue[0].arrived + self._batch_interval
                wait = due - time.monotonic()
                if self._queued_rows >= self._batch_size or self._draining or wait <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._changed.wait()
            taken: list[_Group] = []
            count = 0
            while self._queue and count < self._batch_size:
                group = self._queue.popleft()
                taken.append(group)
                count += _size(group)
            self._queued_rows -= count
            return tuple(taken)

    async def _write(self, groups: tuple[_Group, ...]) -> None:
        rows = [row for group in groups for row in group.rows]
        progress = _Progress(dead=[d for group in groups for d in group.dead])
        try:
            await self._store(rows, progress)
            if progress.dead:
                await self._retrying(self._repository.dead_letter, progress.dead)
        except Exception as error:
            count = sum(_size(g) for g in groups)
            log.error("audit batch dropped", count=count, error=type(error).__name__)
            self._settle(
                groups,
                error=Unavailable("the audit write failed"),
                reason="write_failed",
                written=progress.committed,
            )
            return
        if self._database_down:
            log.info("audit database reachable again", held=self._held)
            self._database_down = False
        for letter in progress.dead:
            AUDIT_DEAD_LETTERS.labels(letter.kind).inc()
        if progress.dead:
            log.warning(
                "audit events set aside as dead letters",
                count=len(progress.dead),
                event_ids=[d.event_id for d in progress.dead[:10]],
            )
        AUDIT_BATCH_SIZE.observe(len(rows))
        self._settle(groups)

    async def _store(self, rows: list[Row], progress: _Progress) -> None:
        """Write `rows`; when the database refuses them, bisect down to the refused rows."""
        if not rows:
            return
        try:
            await self._retrying(self._repository.write, rows)
        except Exception as error:
            if not is_refusal(error):
                raise
            if len(rows) == 1:
                detail = f"{type(error).__name__}: {error}"
                progress.dead.append(row_dead_letter(rows[0], detail))
                return
            middle = len(rows) // 2
            await self._store(rows[:middle], progress)
            await self._store(rows[middle:], progress)
            return
        progress.committed += len(rows)
        # One line per stored event, with the request id and trace id of the request
        # that caused it (docs/logging.md): the audit writer's part of that request's
        # lines (null without one: never the trace of whichever call the writer serves).
        for row in rows:
            log.info(
                "audit_event_written",
                request_id=row[_REQUEST_ID],
                trace_id=row[_TRACE_ID] or None,
                action=row[_ACTION],
                status=row[_STATUS],
            )

    async def _retrying(self, write: Callable[[_T], Awaitable[None]], items: _T) -> None:
        """`write(items)`, retried: without end while the database is unreachable, up to
        `retry_attempts` times for other failures, never for a refusal of the rows."""
        failures = 0

        def retry(error: BaseException) -> bool:
            nonlocal failures
            if not isinstance(error, Exception) or is_refusal(error):
                # Cancellation (a drain cut short) is no failure to retry; a refusal is
                # answered by splitting the batch.
                return False
            if is_unreachable(error):
                if not self._database_down:
                    log.warning("audit database unreachable; holding events", held=self._held)
                    self._database_down = True
                return True
            failures += 1
            log.warning("audit batch write failed", attempt=failures, error=type(error).__name__)
            return failures < self._retry_attempts

        async for attempt in stamina.retry_context(
            on=retry,
            attempts=None,
            timeout=None,
            wait_initial=self._retry_initial,
            wait_max=self._retry_max,
            wait_jitter=self._retry_initial,
        ):
            with attempt:
                await write(items)

    def _settle(
        self,
        groups: Sequence[_Group],
        *,
        error: Exception | None = None,
        reason: str = "",
        written: int = 0,
    ) -> None:
        """Settle `groups`: all written, or (with `error`) `written` of them committed
        and the rest dropped for `reason`."""
        count = sum(_size(g) for g in groups)
        self._held -= count
        if error is None:
            self._counts.written(count)
        else:
            if written:
                self._counts.written(written)
            self._counts.dropped(count - written, reason)
        for group in groups:
            if group.done.done():
                continue
            if error is None:
                group.done.set_result(None)
            else:
                group.done.set_exception(error)


def _size(group: _Group) -> int:
    return len(group.rows) + len(group.dead)
