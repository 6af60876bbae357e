"""Change events: a serialized `AuthorEvent` published on Redis pub/sub after each commit.

Pub/sub rather than a stream: every gateway replica must see every change once, live,
to fan it out to its WebSocket subscribers, and nobody wants a replay of old
changes after a reconnect. A publish that fails is logged and counted; the write it
reports has already been committed and stays so.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gatehouse_authors.domain import Author, author_message
from gatehouse_kit.logging import request_id_var
from gatehouse_protos.authors.v1 import authors_pb2

log = structlog.get_logger(__name__)

EVENTS_PUBLISH_FAILURES = Counter(
    "author_events_publish_failures_total",
    "Author change events that could not be published (the change itself was kept).",
    ["kind"],
)

Kind = authors_pb2.AuthorEvent.Kind


class AuthorEventPublisher:
    """Publishes author changes on one Redis pub/sub channel."""

    def __init__(self, redis: Redis, channel: str, timeout_seconds: float) -> None:
        self._redis = redis
        self._channel = channel
        self._timeout = timeout_seconds

    async def publish(self, kind: Kind.ValueType, author: Author) -> None:
        """Publish one change; never raises, since the change is already committed."""
        occurred_at = Timestamp()
        occurred_at.FromDatetime(datetime.now(UTC))
        event = authors_pb2.AuthorEvent(
            kind=kind,
            author=author_message(author),
            request_id=request_id_var.get() or "",
            occurred_at=occurred_at,
        )
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.publish(self._channel, event.SerializeToString())
        except (RedisError, OSError, TimeoutError) as error:
            kind_name = Kind.Name(kind)
            EVENTS_PUBLISH_FAILURES.labels(kind_name).inc()
            log.warning(
                "author event not published",
                kind=kind_name,
                author_id=author.id,
                error=type(error).__name__,
            )

    async def close(self) -> None:
        await self._redis.aclose()
