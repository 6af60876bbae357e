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
- Any other write failure: retried `retry_attempts` times with backoff, then the
  batch is dropped, counted with reason="write_failed", and its futures fail.
- `drain(timeout)`: stop admitting, write what is held; what is still held at the
  timeout is dropped with reason="shutdown" (never acknowledged, so the senders
  still have it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import stamina
import structlog

from gatehouse_audit.events import Row
from gatehouse_audit.repository import AuditRepository, is_unreachable
from gatehouse_kit.audit_metrics import AUDIT_BATCH_SIZE, AUDIT_COUNTS, AuditCounts
from gatehouse_kit.errors import InvalidArgument, ResourceExhausted, Unavailable

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class _Group:
    rows: Sequence[Row]
    arrived: float
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


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

    async def submit(self, rows: Sequence[Row]) -> asyncio.Future[None]:
        """Admit `rows`; the future completes when they are committed."""
        if not self._accepting:
            raise Unavailable("the audit service is shutting down")
        if len(rows) > self._capacity:
            # It would be refused for ever; the sender must split it.
            raise InvalidArgument("the batch is larger than the audit queue's capacity")
        if self._held + len(rows) > self._capacity:
            raise ResourceExhausted("the audit queue is full; retry later")
        group = _Group(rows, time.monotonic())
        group.done.add_done_callback(_observe)
        self._queue.append(group)
        self._queued_rows += len(rows)
        self._held += len(rows)
        self._counts.received(len(rows))
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
            count = sum(len(g.rows) for g in left)
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
                count += len(group.rows)
            self._queued_rows -= count
            return tuple(taken)

    async def _write(self, groups: tuple[_Group, ...]) -> None:
        rows = [row for group in groups for row in group.rows]
        failures = 0

        def retry(error: BaseException) -> bool:
            nonlocal failures
            if not isinstance(error, Exception):
                return False  # cancellation (a drain cut short) is not a failure to retry
            if is_unreachable(error):
                if not self._database_down:
                    log.warning("audit database unreachable; holding events", held=self._held)
                    self._database_down = True
                return True
            failures += 1
            log.warning("audit batch write failed", attempt=failures, error=type(error).__name__)
            return failures < self._retry_attempts

        try:
            async for attempt in stamina.retry_context(
                on=retry,
                attempts=None,
                timeout=None,
                wait_initial=self._retry_initial,
                wait_max=self._retry_max,
                wait_jitter=self._retry_initial,
            ):
                with attempt:
                    await self._repository.write(rows)
        except Exception as error:
            log.error("audit batch dropped", count=len(rows), error=type(error).__name__)
            self._settle(groups, error=Unavailable("the audit write failed"), reason="write_failed")
            return
        if self._database_down:
            log.info("audit database reachable again", held=self._held)
            self._database_down = False
        AUDIT_BATCH_SIZE.observe(len(rows))
        self._settle(groups)

    def _settle(
        self,
        groups: Sequence[_Group],
        *,
        error: Exception | None = None,
        reason: str = "",
    ) -> None:
        count = sum(len(g.rows) for g in groups)
        self._held -= count
        if error is None:
            self._counts.written(count)
        else:
            self._counts.dropped(count, reason)
        for group in groups:
            if group.done.done():
                continue
            if error is None:
                group.done.set_result(None)
            else:
                group.done.set_exception(error)
