"""One authenticated socket: who it belongs to, how it encodes, and its bounded send queue.

Frames are never written by the code that produces them: responses and broadcasts are
appended to the socket's queue and a writer task (alive only while the queue is not
empty, so an idle socket costs no task) sends them in order. A producer therefore never
waits on a client; a client that reads too slowly fills its queue and is closed with
1008, so it cannot hold up broadcasts to everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from dataclasses import dataclass

import structlog
from starlette.websockets import WebSocket

from gatehouse_gateway.auth import Principal
from gatehouse_gateway.websocket.metrics import WS_MESSAGES_SENT
from gatehouse_gateway.websocket.protocol import Codec, Frame

log = structlog.get_logger(__name__)

# Close codes of docs/websocket.md and RFC 6455 that this endpoint uses.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_AUTH_FAILED = 4001
CLOSE_AUTH_TIMEOUT = 4002


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a socket comes from, for audit events."""

    ip: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


class Session:
    """An open, authenticated `/web` socket."""

    __slots__ = (
        "_expiry",
        "_queue",
        "_queue_size",
        "_writer",
        "closing",
        "codec",
        "lease_id",
        "peer",
        "principal",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        codec: Codec,
        principal: Principal,
        *,
        queue_size: int,
        peer: Peer,
    ) -> None:
        self.websocket = websocket
        self.codec = codec
        self.principal = principal
        self.peer = peer
        self.lease_id = uuid.uuid4().hex
        self.closing = False
        # Created when there is something to send and dropped once sent: an idle socket
        # holds no queue.
        self._queue: deque[Frame | _Close] | None = None
        self._queue_size = queue_size
        self._writer: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._schedule_expiry()

    @property
    def queue_size(self) -> int:
        """How many frames may wait for this socket."""
        return self._queue_size

    def reauthenticate(self, principal: Principal) -> None:
        """Adopt a fresh token's principal (same user) and its later expiry."""
        self.principal = principal
        self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, self.principal.expires_at - time.time())
        self._expiry = loop.call_at(
            loop.time() + delay, self.close_soon, CLOSE_AUTH_FAILED, "token expired"
        )

    def offer(self, frame: Frame) -> bool:
        """Queue `frame` for sending; a full queue closes the socket (slow reader)."""
        if self.closing:
            return False
        if self._queue is not None and len(self._queue) >= self._queue_size:
            log.warning("ws_slow_reader_closed", user_id=self.principal.user_id)
            self.close_soon(CLOSE_POLICY_VIOLATION, "send queue full", drop_pending=True)
            return False
        self._pending().append(frame)
        self._start_writer()
        return True

    def _pending(self) -> deque[Frame | _Close]:
        if self._queue is None:
            self._queue = deque()
        return self._queue

    def close_soon(self, code: int, reason: str, *, drop_pending: bool = False) -> None:
        """Close the socket after the frames already queued (or at once with `drop_pending`)."""
        if self.closing:
            return
        self.closing = True
        if self._expiry is not None:
            self._expiry.cancel()
        if drop_pending:
            self._queue = None
            if self._writer is not None:
                # The writer may be stuck on a client that does not read; the close
                # frame waits for room on its own, without the data before it.
                self._writer.cancel()
                self._writer = None
        self._pending().append(_Close(code, reason))
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, _Close):
                    await self.websocket.close(item.code, item.reason)
                    return
                if isinstance(item, str):
                    await self.websocket.send_text(item)
                else:
                    await self.websocket.send_bytes(item)
                WS_MESSAGES_SENT.inc()
        except Exception as error:  # any send failure means the peer is gone
            log.debug("ws_send_failed", error_type=type(error).__name__)
            self.closing = True
            self._queue = None
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None
                if not self._queue:
                    self._queue = None

    async def finish(self) -> None:
        """Stop timers and wait briefly for the writer, after the socket has ended."""
        self.closing = True
        if self._expiry is not None:
            self._expiry.cancel()
        writer = self._writer
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def flushed(self) -> None:
        """Wait until everything queued (including a close) has been handed to the server."""
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(writer)
