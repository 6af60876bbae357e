"""Every socket of this gateway process, the subscribed ones, and the feeds they share.

- Broadcasts: the authors service publishes each committed change as a serialized
  `gatehouse.authors.v1.AuthorEvent` on a Redis pub/sub channel. Each gateway process
  subscribes once, applies every event to its edge cache of author reads
  (`gatehouse_gateway.cache`) and fans it out to its own subscribed sockets, so a change
  reaches subscribers and caches on every replica. The subscription comes back by itself after a
  Redis outage; events published while it was down are not replayed (pub/sub keeps none).
- Leases: one task renews the concurrency lease of every open socket, rather than a
  timer per socket.
- Shutdown: `close_all` ends every socket with 1001 so clients reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as redis
import structlog
from google.protobuf.message import DecodeError

from gatehouse_gateway.cache import AuthorCache
from gatehouse_gateway.errors import ApiError
from gatehouse_gateway.operations import author_json
from gatehouse_gateway.ratelimiting import RateLimiter
from gatehouse_gateway.rbac import rate_limit_tier
from gatehouse_gateway.websocket.protocol import CODECS, Frame, PkgId
from gatehouse_gateway.websocket.session import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    Session,
)
from gatehouse_protos.authors.v1 import authors_pb2

log = structlog.get_logger(__name__)

_EVENT_PKG = {
    authors_pb2.AuthorEvent.KIND_CREATED: PkgId.AUTHOR_CREATED,
    authors_pb2.AuthorEvent.KIND_UPDATED: PkgId.AUTHOR_UPDATED,
    authors_pb2.AuthorEvent.KIND_DELETED: PkgId.AUTHOR_DELETED,
}
_RECONNECT_INITIAL = 0.1
_RECONNECT_MAX = 5.0
# Renew each lease this many times per TTL, so one failed renewal does not lose it.
_RENEWALS_PER_TTL = 3
_DEFAULT_LEASE_TTL = 60.0


class WebSocketHub:
    """The sockets of one gateway process and their Redis broadcast subscription."""

    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        rate_limiter: RateLimiter,
        cache: AuthorCache,
    ) -> None:
        self._redis = client
        self._cache = cache
        self._channel = channel
        self._rate_limiter = rate_limiter
        self.sessions: set[Session] = set()
        self.subscribers: set[Session] = set()
        # Set while the Redis subscription is confirmed; `lost` while it is not.
        self.listening = asyncio.Event()
        self.lost = asyncio.Event()
        self._lease_ttl = _DEFAULT_LEASE_TTL
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Subscribe to the broadcast channel and start renewing leases."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="ws-broadcast-subscriber"),
            asyncio.create_task(self._renew_leases(), name="ws-lease-renewer"),
        ]

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Close every socket with 1001, then stop the subscriber and the renewer."""
        await self.close_all(grace_seconds)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

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
        self.subscribers.discard(session)

    def publish_local(self, payload: bytes) -> int:
        """Fan one serialized AuthorEvent out to this process's subscribers; how many got it."""
        try:
            event = authors_pb2.AuthorEvent.FromString(payload)
        except DecodeError:
            log.warning("ws_broadcast_undecodable", size=len(payload))
            return 0
        pkg_id = _EVENT_PKG.get(event.kind)
        if pkg_id is None:
            log.warning("ws_broadcast_unknown_kind", kind=int(event.kind))
            return 0
        data: Any = author_json(event.author)
        self._cache.apply(event, data)
        # Encode once per format, not once per socket.
        frames: dict[str, Frame] = {}
        delivered = 0
        for session in list(self.subscribers):
            fmt = session.codec.format
            frame = frames.get(fmt)
            if frame is None:
                frame = frames[fmt] = CODECS[fmt].broadcast(pkg_id, data)
            if session.offer(frame):
                delivered += 1
        return delivered

    async def _listen(self) -> None:
        delay = _RECONNECT_INITIAL
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    async for message in pubsub.listen():
                        if message["type"] == "subscribe":
                            self._cache.subscribed()
                            self.lost.clear()
                            self.listening.set()
                            delay = _RECONNECT_INITIAL
                            log.info("ws_broadcast_subscribed", channel=self._channel)
                        elif message["type"] == "message":
                            self.publish_local(message["data"])
            except (redis.RedisError, OSError) as error:
                log.warning(
                    "ws_broadcast_subscription_lost",
                    error_type=type(error).__name__,
                    retry_in_seconds=delay,
                )
            finally:
                self._cache.unsubscribed()
                self.listening.clear()
                self.lost.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX)

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
