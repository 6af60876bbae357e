"""Every socket of this gateway process, the subscribed ones, and the feeds they share.

- Broadcasts: the authors service relays each committed change to the Redis Stream of
  changes (docs/authors.md, Change events). Each gateway process reads it with one
  reader (`XREAD BLOCK` from the last offset it read), applies every event to its edge
  cache of author reads (`gatehouse_gateway.cache`) and fans it out to its own subscribed
  sockets, so a change reaches subscribers and caches on every replica. After a Redis
  outage the reader resumes from its last offset, so nothing is skipped; an entry whose
  predecessor is not that offset (history trimmed or lost meanwhile) is a gap: the cache
  starts afresh and recoverable subscriptions get HISTORY_GAP.
- Recovery (docs/websocket.md, Recovery by offset): a subscription with an offset is
  replayed from the stream (`XRANGE`) while live events for it are held back; then the
  held events follow, each sent only if newer than the last one the socket got, so
  replay and live stream join without a duplicate or a gap.
- Leases: one task renews the concurrency lease of every open socket, rather than a
  timer per socket.
- Shutdown: `close_all` ends every socket with 1001 so clients reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis
import structlog
from google.protobuf.message import DecodeError
from prometheus_client import Counter

from gatehouse_gateway.cache import AuthorCache
from gatehouse_gateway.errors import ApiError, ErrorCode
from gatehouse_gateway.operations import author_json
from gatehouse_gateway.ratelimiting import RateLimiter
from gatehouse_gateway.rbac import rate_limit_tier
from gatehouse_gateway.websocket.protocol import CODECS, Frame, PkgId
from gatehouse_gateway.websocket.session import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    Session,
)
from gatehouse_kit import change_stream
from gatehouse_protos.authors.v1 import authors_pb2

log = structlog.get_logger(__name__)

STREAM_GAPS = Counter(
    "gateway_change_stream_gaps_total",
    "Breaks in the change stream found by this process's reader: events it can no longer "
    "read (history trimmed or lost in Redis while it was away).",
)
WS_RECOVERIES = Counter(
    "ws_subscription_recoveries_total",
    "Subscriptions asked to recover from an offset, by result: recovered, history_gap.",
    ["result"],
)
for _result in ("recovered", "history_gap"):
    WS_RECOVERIES.labels(_result)

_EVENT_PKG = {
    authors_pb2.AuthorEvent.KIND_CREATED: PkgId.AUTHOR_CREATED,
    authors_pb2.AuthorEvent.KIND_UPDATED: PkgId.AUTHOR_UPDATED,
    authors_pb2.AuthorEvent.KIND_DELETED: PkgId.AUTHOR_DELETED,
}
_RECONNECT_INITIAL = 0.1
_RECONNECT_MAX = 5.0
# Entries per XREAD of the reader.
_READ_COUNT = 500
# Renew each lease this many times per TTL, so one failed renewal does not lose it.
_RENEWALS_PER_TTL = 3
_DEFAULT_LEASE_TTL = 60.0


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change stream, decoded for broadcasting."""

    offset: str
    prev: str
    pkg_id: PkgId
    data: Any
    event: authors_pb2.AuthorEvent


@dataclass(slots=True)
class _Recovery:
    """A recoverable subscription: the last offset its socket got, and (while its history
    is replayed) the live changes held back for it."""

    offset: str
    held: list[Change] | None = None
    replay: asyncio.Task[None] | None = None
    key: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.key = change_stream.offset_key(self.offset)


def _decode(offset: str, fields: change_stream.Fields) -> Change | None:
    prev = fields.get(change_stream.PREV, b"").decode()
    try:
        event = authors_pb2.AuthorEvent.FromString(fields.get(change_stream.EVENT, b""))
    except DecodeError:
        log.warning("ws_broadcast_undecodable", offset=offset)
        return None
    pkg_id = _EVENT_PKG.get(event.kind)
    if pkg_id is None:
        log.warning("ws_broadcast_unknown_kind", kind=int(event.kind), offset=offset)
        return None
    return Change(offset, prev, pkg_id, author_json(event.author), event)


class WebSocketHub:
    """The sockets of one gateway process and their reader of the change stream."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        rate_limiter: RateLimiter,
        cache: AuthorCache,
        *,
        block_seconds: float = 5.0,
    ) -> None:
        self._redis = client
        self._cache = cache
        self._stream = stream
        self._rate_limiter = rate_limiter
        self._block_ms = int(block_seconds * 1000)
        self.sessions: set[Session] = set()
        self.subscribers: set[Session] = set()
        self._recoveries: dict[Session, _Recovery] = {}
        # The offset of the last entry the reader handled; None until it first reached
        # the stream.
        self.position: str | None = None
        # Set while the reader is connected to the stream; `lost` while it is not.
        self.listening = asyncio.Event()
        self.lost = asyncio.Event()
        self._lease_ttl = _DEFAULT_LEASE_TTL
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start reading the change stream and renewing leases."""
        self._tasks = [
            asyncio.create_task(self._follow(), name="ws-change-stream-reader"),
            asyncio.create_task(self._renew_leases(), name="ws-lease-renewer"),
        ]

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Close every socket with 1001, then stop the reader and the renewer."""
        await self.close_all(grace_seconds)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._redis.aclose()

    async def close_all(self, grace_seconds: float = 5.0) -> None:
        """Send 1001 (going away) to every socket; wait at most `grace_seconds` for them."""
        sessions = list(self.sessions)
        for session in sessions:
            session.close_soon(CLOSE_GOING_AWAY, "server shutting down")
        if sessions:
            await asyncio.wait(
                [asyncio.ensure_future(s.flushed()) for s in sessions], timeout=grace_seconds
            )
        log.info("ws_sockets_closed", count=len(sessions))

    def add(self, session: Session, lease_ttl: float) -> None:
        """Track an authenticated socket whose lease lives `lease_ttl` seconds unrenewed."""
        self.sessions.add(session)
        if lease_ttl > 0:
            self._lease_ttl = min(self._lease_ttl, lease_ttl)

    def remove(self, session: Session) -> None:
        """Forget a socket that has ended."""
        self.sessions.discard(session)
        self.unsubscribe(session)

    def unsubscribe(self, session: Session) -> None:
        """End the socket's subscription, recoverable or not."""
        self.subscribers.discard(session)
        recovery = self._recoveries.pop(session, None)
        if recovery is not None and recovery.replay is not None:
            recovery.replay.cancel()

    def subscribe(self, session: Session) -> None:
        """Subscribe the socket to live broadcasts without offsets."""
        self.unsubscribe(session)
        self.subscribers.add(session)

    async def subscribe_from(self, session: Session, offset: str) -> dict[str, Any]:
        """Subscribe the socket recoverably, from `offset` ("" for now on); the answer's data.

        With an offset the stream still holds, the events after it are replayed right
        after the answer is sent; otherwise the answer says `recovered: false`.
        UNAVAILABLE when the stream cannot be read.
        """
        if self.position is None or not self.listening.is_set():
            raise _unavailable()
        self.unsubscribe(session)
        if not offset:
            self._recoveries[session] = _Recovery(self.position)
            self.subscribers.add(session)
            return {"subscribed": True, "offset": self.position, "recovered": True}
        recovery = _Recovery(offset, held=[])
        self._recoveries[session] = recovery
        self.subscribers.add(session)
        try:
            first = await self._history(offset, max(session.queue_size // 2, 1))
            newest = first or change_stream.entries(
                await self._redis.xrevrange(self._stream, count=1)
            )
        except (redis.RedisError, OSError) as error:
            self.unsubscribe(session)
            log.warning("ws_recovery_unavailable", error_type=type(error).__name__)
            raise _unavailable() from None
        if self._recoveries.get(session) is not recovery:
            # The socket ended meanwhile: nobody reads the answer.
            return {"subscribed": False}
        continuous = (
            first[0][1].get(change_stream.PREV, b"").decode() == offset
            if first
            else offset == self.position or (bool(newest) and newest[0][0] == offset)
        )
        if not continuous:
            WS_RECOVERIES.labels("history_gap").inc()
            position = self.position
            self._recoveries[session] = _Recovery(position)
            return {"subscribed": True, "offset": position, "recovered": False}
        WS_RECOVERIES.labels("recovered").inc()
        recovery.replay = asyncio.create_task(self._replay(session, recovery, first))
        return {"subscribed": True, "offset": offset, "recovered": True}

    async def _history(self, after: str, count: int) -> list[change_stream.Entry]:
        return change_stream.entries(
            await self._redis.xrange(self._stream, min=f"({after}", count=count)
        )

    async def _replay(
        self, session: Session, recovery: _Recovery, first: list[change_stream.Entry]
    ) -> None:
        """Send the history after the socket's offset at the pace it reads, then what was
        held back meanwhile, then let it go live."""
        chunk = max(session.queue_size // 2, 1)
        entries = first
        try:
            while entries:
                for offset, fields in entries:
                    change = _decode(offset, fields)
                    if change is not None:
                        self._send(session, recovery, change)
                    else:
                        recovery.offset, recovery.key = offset, change_stream.offset_key(offset)
                await session.flushed()
                if session.closing:
                    return
                entries = await self._history(recovery.offset, chunk)
        except (redis.RedisError, OSError) as error:
            log.warning("ws_replay_interrupted", error_type=type(error).__name__)
            session.close_soon(CLOSE_TRY_AGAIN_LATER, "change stream unavailable")
            return
        # No await from here on: the held changes and the live ones join seamlessly.
        held, recovery.held, recovery.replay = recovery.held or [], None, None
        for change in held:
            self._send(session, recovery, change)

    def _send(self, session: Session, recovery: _Recovery, change: Change) -> None:
        """Send `change` on a recoverable subscription unless the socket already had it."""
        key = change_stream.offset_key(change.offset)
        if key <= recovery.key:
            return
        if change.prev != recovery.offset:
            self._offer_gap(session, change.prev)
        recovery.offset, recovery.key = change.offset, key
        session.offer(session.codec.broadcast(change.pkg_id, change.data, change.offset))

    def _offer_gap(self, session: Session, offset: str) -> None:
        session.offer(session.codec.broadcast(PkgId.HISTORY_GAP, {"offset": offset}, offset))

    def publish_local(self, change: Change) -> int:
        """Apply one change to the cache and fan it out to this process's subscribers;
        how many sockets got it."""
        self._cache.apply(change.event, change.data)
        # Encode once per format (and with or without offset), not once per socket.
        frames: dict[tuple[str, bool], Frame] = {}
        key = change_stream.offset_key(change.offset)
        delivered = 0
        for session in list(self.subscribers):
            recovery = self._recoveries.get(session)
            if recovery is not None:
                if recovery.held is not None:
                    recovery.held.append(change)
                    continue
                if key <= recovery.key:
                    continue
                if change.prev != recovery.offset:
                    self._offer_gap(session, change.prev)
                recovery.offset, recovery.key = change.offset, key
            fmt = session.codec.format
            recoverable = recovery is not None
            frame = frames.get((fmt, recoverable))
            if frame is None:
                frame = frames[fmt, recoverable] = CODECS[fmt].broadcast(
                    change.pkg_id, change.data, change.offset if recoverable else None
                )
            if session.offer(frame):
                delivered += 1
        return delivered

    async def _follow(self) -> None:
        delay = _RECONNECT_INITIAL
        while True:
            try:
                if self.position is None:
                    self.position = await self._newest()
                else:
                    await self._redis.ping()
                self._cache.subscribed()
                self.lost.clear()
                self.listening.set()
                delay = _RECONNECT_INITIAL
                log.info("ws_change_stream_following", stream=self._stream, offset=self.position)
                while True:
                    reply = await self._redis.xread(
                        {self._stream: self.position}, count=_READ_COUNT, block=self._block_ms
                    )
                    for stream_entries in reply or ():
                        for offset, fields in change_stream.entries(stream_entries[1]):
                            self._read(offset, fields)
            except (redis.RedisError, OSError) as error:
                log.warning(
                    "ws_change_stream_lost",
                    error_type=type(error).__name__,
                    retry_in_seconds=delay,
                )
            finally:
                self._cache.unsubscribed()
                self.listening.clear()
                self.lost.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX)

    async def _newest(self) -> str:
        """The offset of the stream's newest entry, or its origin when it has none."""
        newest = change_stream.entries(await self._redis.xrevrange(self._stream, count=1))
        return newest[0][0] if newest else change_stream.ORIGIN

    def _read(self, offset: str, fields: change_stream.Fields) -> None:
        prev = fields.get(change_stream.PREV, b"").decode()
        if prev != self.position:
            # Events between our position and this entry are gone: the cache may hold
            # what they changed. Recoverable subscriptions learn of it from `_send`.
            STREAM_GAPS.inc()
            log.warning("ws_change_stream_gap", position=self.position, prev=prev)
            self._cache.subscribed()
        self.position = offset
        change = _decode(offset, fields)
        if change is not None:
            self.publish_local(change)
            return
        # Nothing to send, but the entry is passed: the next one follows it.
        key = change_stream.offset_key(offset)
        for recovery in self._recoveries.values():
            if recovery.held is None and key > recovery.key:
                recovery.offset, recovery.key = offset, key

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl / _RENEWALS_PER_TTL)
            for session in list(self.sessions):
                if session.closing:
                    continue
                await self._renew(session)

    async def _renew(self, session: Session) -> None:
        user_id = session.principal.user_id
        try:
            lease = await self._rate_limiter.renew_connection(user_id, session.lease_id)
            if not lease.granted:
                # The lease was lost (e.g. expired during an outage): ask for it again.
                lease = await self._rate_limiter.acquire_connection(
                    user_id, session.lease_id, rate_limit_tier(session.principal)
                )
        except ApiError as error:
            log.warning("ws_lease_renewal_failed", code=str(error.code))
            return
        if not lease.granted:
            session.close_soon(CLOSE_POLICY_VIOLATION, "too many connections")


def _unavailable() -> ApiError:
    return ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "the change stream cannot be read")
