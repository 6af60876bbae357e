"""Change events on Redis pub/sub, and writes that survive a failed publish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

import asyncpg
import pytest
import structlog
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from gatehouse_authors.settings import Settings
from gatehouse_protos.authors.v1 import authors_pb2 as pb
from tests.harness.backends import Backend
from tests.harness.private import PrivateRedis

if TYPE_CHECKING:
    from gatehouse_protos.authors.v1.authors_pb2_grpc import AuthorsServiceAsyncStub

    Serve = Callable[[Settings], AbstractAsyncContextManager[AuthorsServiceAsyncStub]]


@pytest.fixture
async def subscription(redis_server: Backend, service_settings: Settings) -> AsyncIterator[PubSub]:
    """A subscriber to the service's events channel, like a gateway replica."""
    redis = Redis.from_url(redis_server.url)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(service_settings.events_channel)
    yield pubsub
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
    await redis.aclose()


async def _next_event(pubsub: PubSub) -> pb.AuthorEvent:
    async with asyncio.timeout(5):
        while True:
            message = await pubsub.get_message(timeout=5)
            if message is not None:
                return pb.AuthorEvent.FromString(message["data"])


async def test_every_change_is_published_once_in_order(
    stub: AuthorsServiceAsyncStub, subscription: PubSub, prefix: str
) -> None:
    metadata = (("x-request-id", f"{prefix}-req"),)
    created = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} A"), metadata=metadata)
    updated = await stub.UpdateAuthor(pb.UpdateAuthorRequest(id=created.id, name=f"{prefix} B"))
    await stub.DeleteAuthor(pb.DeleteAuthorRequest(id=created.id))

    first, second, third = [await _next_event(subscription) for _ in range(3)]
    assert (first.kind, first.author, first.request_id) == (
        pb.AuthorEvent.KIND_CREATED,
        created,
        f"{prefix}-req",
    )
    assert (second.kind, second.author) == (pb.AuthorEvent.KIND_UPDATED, updated)
    assert (third.kind, third.author) == (pb.AuthorEvent.KIND_DELETED, updated)
    assert first.occurred_at.ToDatetime() <= third.occurred_at.ToDatetime()


async def test_a_failed_publish_keeps_the_write_and_is_counted(
    database_url: str,
    settings_for: Callable[..., Settings],
    serve_authors: Serve,
    private_redis: PrivateRedis,
    sql: asyncpg.Connection,
    prefix: str,
) -> None:
    private_redis.stop()
    settings = settings_for(database_url, redis_url=private_redis.url)

    def failures() -> float:
        value = REGISTRY.get_sample_value(
            "author_events_publish_failures_total", {"kind": "KIND_CREATED"}
        )
        return value or 0.0

    before = failures()
    with structlog.testing.capture_logs() as logs:
        async with serve_authors(settings) as stub:
            created = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Kept"))
            got = await stub.GetAuthor(pb.GetAuthorRequest(id=created.id))
    assert got.name == f"{prefix} Kept"
    assert failures() == before + 1
    assert [(e["event"], e["author_id"]) for e in logs if e["log_level"] == "warning"] == [
        ("author event not published", created.id)
    ]
    assert await sql.fetchval("SELECT name FROM authors WHERE id = $1", created.id) == (
        f"{prefix} Kept"
    )
