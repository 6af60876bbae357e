"""The gateway's side of audit ingestion: a bounded buffer and a streaming sender.

Use from the event loop's thread::

    client = AuditClient("127.0.0.1:7052", capacity=10_000)
    await client.start()
    accepted = client.enqueue(event)       # never waits; False when the buffer is full
    await client.close(timeout=5.0)        # flushes, then gives up on the rest

- `enqueue(event)` fills in `event_id` (a UUID4) and `timestamp` (now) when unset,
  and only appends to an in-memory buffer. It returns False, counting the event in
  `audit_logs_dropped_total{reason="buffer_full"}`, when `capacity` events are
  already held (buffered or sent but not acknowledged), and `reason="closed"` after
  `close()` began. A request handler never waits on the audit service.
- A background task sends batches (up to `batch_size` events, or whatever is
  buffered after `flush_interval` seconds) over one `IngestStream` and keeps each
  batch until its acknowledgement arrives, which means the events are committed.
  When the stream breaks it reconnects with backoff and sends every unacknowledged
  batch again; the service stores an `event_id` once, so that is safe. A batch the
  service refuses for now (queue full, shutting down, write failed) is sent again
  after a growing pause; one it can never store (invalid) is dropped with
  `reason="rejected"`.
- `close(timeout)` sends what is held and waits for the acknowledgements; what is
  still held at the timeout is dropped with `reason="shutdown"`.

Redaction of `request_data` happens before `enqueue`: see `gatehouse_kit.redaction`
(`redact`, `request_data_json`). Metrics: `gatehouse_kit.audit_metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

import grpc
import stamina
import structlog

from gatehouse_kit.audit_metrics import AUDIT_BATCH_SIZE, AUDIT_COUNTS, AuditCounts
from gatehouse_kit.grpc_client import open_channel
from gatehouse_protos.audit.v1 import audit_pb2, audit_pb2_grpc

if TYPE_CHECKING:
    Stream = grpc.aio.StreamStreamCall[audit_pb2.IngestBatch, audit_pb2.IngestAck]

log = structlog.get_logger(__name__)

_REFUSED_PAUSE_INITIAL = 0.05
_REFUSED_PAUSE_MAX = 2.0


class _StreamLost(Exception):
    """The ingest stream ended before every batch sent on it was acknowledged."""


class AuditClient:
    """A non-blocking, bounded, reconnecting audit event sender (see module doc)."""

    def __init__(
        self,
        channel_or_target: grpc.aio.Channel | str,
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_in_flight: int = 4,
        reconnect_max_seconds: float = 5.0,
        counts: AuditCounts = AUDIT_COUNTS,
    ) -> None:
        if isinstance(channel_or_target, str):
            self._channel = open_channel(channel_or_target, max_attempts=1)
            self._owns_channel = True
        else:
            self._channel = channel_or_target
            self._owns_channel = False
        self._stub = audit_pb2_grpc.AuditServiceStub(self._channel)
        self._capacity = capacity
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_in_flight = max_in_flight
        self._reconnect_max = reconnect_max_seconds
        self._counts = counts
        counts.set_capacity(capacity)
        counts.declare_drop_reasons("buffer_full", "closed", "rejected", "shutdown")
        self._buffer: deque[audit_pb2.AuditEvent] = deque()
        self._oldest = 0.0
        self._resend: deque[audit_pb2.IngestBatch] = deque()
        self._unacked: dict[int, audit_pb2.IngestBatch] = {}
        self._held = 0
        self._sequence = itertools.count(1)
        self._refusals = 0
        self._pause_until = 0.0
        self._closing = False
        self._work = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        """Events buffered or sent and not yet acknowledged."""
        return self._held

    async def start(self) -> None:
        """Start the background sender."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-client-sender")

    def enqueue(self, event: audit_pb2.AuditEvent) -> bool:
        """Buffer `event` for sending; False (and counted as dropped) when it cannot be."""
        if self._closing:
            self._counts.rejected(1, "closed")
            return False
        if self._held >= self._capacity:
            self._counts.rejected(1, "buffer_full")
            return False
        if not event.event_id:
            event.event_id = str(uuid.uuid4())
        if not event.HasField("timestamp"):
            event.timestamp.GetCurrentTime()
        if not self._buffer:
            self._oldest = time.monotonic()
            self._work.set()
        self._buffer.append(event)
        self._held += 1
        self._drained.clear()
        self._counts.received(1)
        if len(self._buffer) >= self._batch_size:
            self._work.set()
        return True

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (a flush budget)
        """Flush what is held within `timeout` seconds, drop (and count) the rest, stop."""
        self._closing = True
        self._work.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._held:
            log.warning("audit events dropped at shutdown", count=self._held)
            self._counts.dropped(self._held, "shutdown")
            self._held = 0
            self._buffer.clear()
            self._resend.clear()
            self._unacked.clear()
        self._drained.set()
        if self._owns_channel:
            await self._channel.close()

    def _finished(self) -> bool:
        return self._closing and self._held == 0

    async def _run(self) -> None:
        while not self._finished():
            async for attempt in stamina.retry_context(
                on=_StreamLost,
                attempts=None,
                timeout=None,
                wait_initial=0.05,
                wait_max=self._reconnect_max,
                wait_jitter=0.05,
            ):
                with attempt:
                    await self._session()

    async def _session(self) -> None:
        """One ingest stream; returns when done or after progress, raises when none."""
        call: Stream = self._stub.IngestStream()
        progress = [0]
        sender = asyncio.create_task(self._send(call))
        reader = asyncio.create_task(self._read(call, progress))
        try:
            done, _ = await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
            await reader
        except Exception as error:
            # Whatever ended the stream, the sender must live on: reconnect and resend.
            code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else None
            log.warning(
                "audit stream lost",
                code=code,
                error=type(error).__name__,
                unacknowledged=len(self._unacked),
            )
            self._requeue_unacked()
            if not progress[0]:
                raise _StreamLost from error
        finally:
            for task in (sender, reader):
                task.cancel()
            call.cancel()
            self._work.set()

    def _requeue_unacked(self) -> None:
        self._resend.extendleft(reversed(list(self._unacked.values())))
        self._unacked.clear()

    async def _send(self, call: Stream) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                await call.done_writing()
                return
            self._unacked[batch.sequence] = batch
            AUDIT_BATCH_SIZE.observe(len(batch.events))
            await call.write(batch)

    async def _next_batch(self) -> audit_pb2.IngestBatch | None:
        """The next batch to send, once the window and pacing allow; None when done."""
        while True:
            self._work.clear()
            now = time.monotonic()
            wait: float | None = None
            if self._closing and not (self._buffer or self._resend or self._unacked):
                return None
            if len(self._unacked) < self._max_in_flight and now >= self._pause_until:
                if self._resend:
                    batch = self._resend.popleft()
                    batch.sequence = next(self._sequence)
                    return batch
                if self._buffer:
                    due = self._oldest + self._flush_interval
                    if len(self._buffer) >= self._batch_size or self._closing or now >= due:
                        return self._take_from_buffer()
                    wait = due - now
            elif len(self._unacked) < self._max_in_flight:
                wait = self._pause_until - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), wait)

    def _take_from_buffer(self) -> audit_pb2.IngestBatch:
        count = min(len(self._buffer), self._batch_size)
        events = [self._buffer.popleft() for _ in range(count)]
        self._oldest = time.monotonic()
        return audit_pb2.IngestBatch(sequence=next(self._sequence), events=events)

    async def _read(self, call: Stream, progress: list[int]) -> None:
        while True:
            ack: Any = await call.read()
            if ack is grpc.aio.EOF:
                if self._unacked or not self._finished():
                    raise _StreamLost("the audit service ended the stream")
                return
            batch = self._unacked.pop(ack.sequence, None)
            if batch is None:
                continue
            self._settle(batch, ack)
            if ack.code == grpc.StatusCode.OK.value[0]:
                progress[0] += 1
            self._work.set()

    def _settle(self, batch: audit_pb2.IngestBatch, ack: audit_pb2.IngestAck) -> None:
        count = len(batch.events)
        if ack.code == grpc.StatusCode.OK.value[0]:
            self._refusals = 0
            self._forget(count)
            self._counts.written(count)
        elif ack.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]:
            log.error("audit batch rejected as invalid", count=count, reason=ack.message)
            self._forget(count)
            self._counts.dropped(count, "rejected")
        else:
            # Refused for now (queue full, shutting down, write failed): pause, then resend.
            self._resend.append(batch)
            pause = min(_REFUSED_PAUSE_MAX, _REFUSED_PAUSE_INITIAL * 2**self._refusals)
            self._refusals = min(self._refusals + 1, 16)
            self._pause_until = time.monotonic() + pause

    def _forget(self, count: int) -> None:
        self._held -= count
        if self._held == 0:
            self._drained.set()
