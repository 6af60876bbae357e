"""The gateway's one LeaseQuota stream to the ratelimit service (docs/ratelimit.md, Quota).

Use from the event loop's thread::

    stream = QuotaStream(channel, patience=0.5)
    await stream.start()
    grant = await stream.ask(request, deadline=0.5)   # QuotaUnavailable when it cannot
    stream.send(request)                              # fire and forget (giving back)
    await stream.close(timeout=1.0)

- `ask` numbers the request, sends it and waits at most `deadline` seconds for the grant
  of that number. A grant that comes after its caller stopped waiting is not lost: what
  it granted is given back at once.
- The stream opens at `start` and, when it breaks, opens again at once; requests not
  yet answered are sent again on the new stream (a grant lost with the old one only
  leaves its hits counted until they leave the window). When it cannot be opened it is
  tried again with backoff; requests wait for it for `patience` seconds (a replica
  restarting: Traefik sends the next attempt to a live one), after which the stream is
  down: `ask` fails at once and `send` drops its request until it opens again, and the
  caller's fail mode decides.
- `close` sends what is queued, ends the stream and waits for the service to end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from prometheus_client import Gauge

from gatehouse_protos.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc

if TYPE_CHECKING:
    Call = grpc.aio.StreamStreamCall[ratelimit_pb2.QuotaRequest, ratelimit_pb2.QuotaGrant]

log = structlog.get_logger(__name__)

QUOTA_STREAM_UP = Gauge(
    "gateway_rate_limit_quota_stream_up",
    "1 while this process's LeaseQuota stream to the ratelimit service is open, else 0.",
)

_CONNECT_SECONDS = 2.0
_RECONNECT_INITIAL = 0.05
_RECONNECT_MAX = 1.0
# Consecutive unanswered requests after which a stream that still looks open is dropped
# and opened again (a peer that stopped answering).
_TIMEOUTS_BEFORE_RECONNECT = 3


class QuotaUnavailable(Exception):
    """The ratelimit service did not grant in time: stream down, no answer, or an error."""


def giving_back(
    request: ratelimit_pb2.QuotaRequest, grant: ratelimit_pb2.QuotaGrant
) -> ratelimit_pb2.QuotaRequest | None:
    """A request that gives back every hit `grant` granted for `request`; None if none."""
    demands = [
        ratelimit_pb2.QuotaDemand(
            descriptor=demand.descriptor,
            returned_reservation=quota.reservation,
            returned_hits=quota.granted_hits,
        )
        for demand, quota in zip(request.demands, grant.quotas, strict=False)
        if quota.granted_hits and quota.reservation
    ]
    if not demands:
        return None
    return ratelimit_pb2.QuotaRequest(domain=request.domain, tier=request.tier, demands=demands)


class QuotaStream:
    """One reconnecting LeaseQuota stream with requests matched to grants by id."""

    def __init__(self, channel: grpc.aio.Channel, *, patience: float) -> None:
        self._stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        self._patience = patience
        self._ids = itertools.count(1)
        # Requests sent or to send, by id: the caller's future (None: nobody waits).
        self._pending: dict[
            int, tuple[asyncio.Future[ratelimit_pb2.QuotaGrant] | None, ratelimit_pb2.QuotaRequest]
        ] = {}
        self._outbox: asyncio.Queue[int | None] = asyncio.Queue()
        self._down = False
        self._closing = False
        self._timeouts = 0
        self._call: Call | None = None
        self._task: asyncio.Task[None] | None = None
        QUOTA_STREAM_UP.set(0)

    async def start(self) -> None:
        """Open the stream in the background (reopened whenever it breaks)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="quota-stream")

    async def ask(
        self,
        request: ratelimit_pb2.QuotaRequest,
        deadline: float,
    ) -> ratelimit_pb2.QuotaGrant:
        """The grant of `request` (numbered here), within `deadline` seconds."""
        if self._down or self._closing:
            raise QuotaUnavailable("the quota stream is down")
        future: asyncio.Future[ratelimit_pb2.QuotaGrant] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue(request, future)
        try:
            async with asyncio.timeout(deadline):
                return await future
        except TimeoutError:
            self._timeouts += 1
            if self._timeouts >= _TIMEOUTS_BEFORE_RECONNECT and self._call is not None:
                log.warning("quota stream not answering; opening it again")
                self._call.cancel()
            raise QuotaUnavailable("no quota grant within the deadline") from None

    def send(self, request: ratelimit_pb2.QuotaRequest) -> None:
        """Send `request` without waiting for its grant; dropped while the stream is down."""
        if not self._down:
            self._queue(request, None)

    def _queue(
        self,
        request: ratelimit_pb2.QuotaRequest,
        future: asyncio.Future[ratelimit_pb2.QuotaGrant] | None,
    ) -> None:
        request.id = next(self._ids)
        self._pending[request.id] = (future, request)
        self._outbox.put_nowait(request.id)

    async def close(self, timeout: float = 1.0) -> None:  # noqa: ASYNC109 (a flush budget)
        """Send what is queued, end the stream, and stop within `timeout` seconds."""
        self._closing = True
        self._outbox.put_nowait(None)
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_pending()

    async def _run(self) -> None:
        delay = _RECONNECT_INITIAL
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        while not self._closing:
            opened = loop.time()
            if await self._session():
                failing_since = None
                if loop.time() - opened >= _RECONNECT_MAX:
                    # It served a while: open the next one at once.
                    delay = _RECONNECT_INITIAL
                    continue
            else:
                failing_since = failing_since or loop.time()
                if not self._down and loop.time() - failing_since >= self._patience:
                    log.warning("quota stream cannot be opened; the fail mode applies")
                    self._down = True
                    self._fail_pending()
            await asyncio.sleep(delay * (1 + random.random() / 2))  # noqa: S311 (jitter)
            delay = min(delay * 2, _RECONNECT_MAX)

    async def _session(self) -> bool:
        """One stream, until it ends; False when it could not be opened."""
        call: Call = self._stub.LeaseQuota()
        try:
            async with asyncio.timeout(_CONNECT_SECONDS):
                await call.wait_for_connection()
        except (grpc.aio.AioRpcError, TimeoutError):
            call.cancel()
            return False
        if self._down:
            log.info("quota stream open again")
        self._call, self._down, self._timeouts = call, False, 0
        QUOTA_STREAM_UP.set(1)
        # Whatever was sent on an earlier stream and not answered goes out again.
        self._outbox = asyncio.Queue()
        for request_id in self._pending:
            self._outbox.put_nowait(request_id)
        if self._closing:
            self._outbox.put_nowait(None)
        writer = asyncio.create_task(self._write(call))
        reader = asyncio.create_task(self._read(call))
        try:
            done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
            await reader
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else None
            if not self._closing:
                log.warning("quota stream lost", code=code, unanswered=len(self._pending))
        finally:
            for task in (writer, reader):
                task.cancel()
            call.cancel()
            self._call = None
            QUOTA_STREAM_UP.set(0)
        return True

    async def _write(self, call: Call) -> None:
        while (request_id := await self._outbox.get()) is not None:
            entry = self._pending.get(request_id)
            if entry is None:
                continue
            future, request = entry
            if future is not None and future.done():
                # The caller gave up before it was sent: nothing to ask for.
                del self._pending[request_id]
                continue
            await call.write(request)
        await call.done_writing()

    async def _read(self, call: Call) -> None:
        while True:
            grant: Any = await call.read()
            if grant is grpc.aio.EOF:
                return
            self._timeouts = 0
            entry = self._pending.pop(grant.id, None)
            if entry is None:
                continue
            future, request = entry
            if future is None:
                continue
            if future.done():
                late = giving_back(request, grant)
                if late is not None:
                    self.send(late)
                continue
            future.set_result(grant)

    def _fail_pending(self) -> None:
        """Fail every waiting caller; requests nobody waits for are dropped."""
        for future, _ in self._pending.values():
            if future is not None and not future.done():
                future.set_exception(QuotaUnavailable("the quota stream is down"))
        self._pending.clear()
