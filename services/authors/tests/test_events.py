"""Change events: written with each change in the outbox, relayed to the Redis Stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from gatehouse_authors.events import RELAY_LOCK
from gatehouse_authors.settings import Settings
from gatehouse_kit import change_stream
from gatehouse_protos.authors.v1 import authors_pb2 as pb
from tests.harness.backends import Backend
from tests.harness.databases import drop_database
from tests.harness.private import PrivateRedis

if TYPE_CHECKING:
    from gatehouse_protos.authors.v1.authors_pb2_grpc import AuthorsServiceAsyncStub

    Serve = Callable[[Settings], AbstractAsyncContextManager[AuthorsServiceAsyncStub]]

Entry = change_stream.Entry
# Generous: a loaded two-core machine may take seconds to schedule the relay.
WAIT_SECONDS = 30.0


async def _entries(redis_url: str, stream: str, count: int) -> list[Entry]:
    """The stream's first `count` entries, waiting (bounded) until there are that many."""
    redis = Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                entries = change_stream.entries(await redis.xrange(stream))
                if len(entries) >= count:
                    return entries
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


def _events(entries: list[Entry]) -> list[pb.AuthorEvent]:
    return [pb.AuthorEvent.FromString(fields[change_stream.EVENT]) for _, fields in entries]


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while not await check():  # noqa: ASYNC110 (the state is in PostgreSQL or Redis)
            await asyncio.sleep(0.05)


async def test_every_change_is_published_once_in_order_with_its_predecessor(
    stub: AuthorsServiceAsyncStub,
    service_settings: Settings,
    redis_server: Backend,
    sql: asyncpg.Connection,
    prefix: str,
) -> None:
    metadata = (("x-request-id", f"{prefix}-req"),)
    created = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} A"), metadata=metadata)
    updated = await stub.UpdateAuthor(pb.UpdateAuthorRequest(id=created.id, name=f"{prefix} B"))
    await stub.DeleteAuthor(pb.DeleteAuthorRequest(id=created.id))

    entries = await _entries(redis_server.url, service_settings.stream, 3)
    first, second, third = _events(entries)
    assert len(entries) == 3
    assert (first.kind, first.author, first.request_id) == (
        pb.AuthorEvent.KIND_CREATED,
        created,
        f"{prefix}-req",
    )
    assert (second.kind, second.author) == (pb.AuthorEvent.KIND_UPDATED, updated)
    assert (third.kind, third.author) == (pb.AuthorEvent.KIND_DELETED, updated)
    assert first.occurred_at.ToDatetime() <= third.occurred_at.ToDatetime()
    # Each entry names the one before it; the first follows the stream's origin.
    previous = [fields[change_stream.PREV].decode() for _, fields in entries]
    assert previous == [change_stream.ORIGIN, entries[0][0], entries[1][0]]
    await _until(lambda: _outbox_empty(sql))


async def _outbox_empty(sql: asyncpg.Connection) -> bool:
    return bool(await sql.fetchval("SELECT count(*) FROM author_outbox") == 0)


async def test_a_failed_write_records_no_event(
    stub: AuthorsServiceAsyncStub,
    service_settings: Settings,
    redis_server: Backend,
    prefix: str,
) -> None:
    await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Taken"))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Taken"))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.UpdateAuthor(pb.UpdateAuthorRequest(id=2**62, name=f"{prefix} Nobody"))
    await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Marker"))
    # One relay keeps the outbox's order: once the marker is in, so is all before it.
    entries = await _until_newest(redis_server.url, service_settings.stream, f"{prefix} Marker")
    names = [e.author.name for e in _events(entries)]
    assert names.count(f"{prefix} Taken") == 1
    assert f"{prefix} Nobody" not in names


async def _until_newest(redis_url: str, stream: str, name: str) -> list[Entry]:
    """The stream's entries once the newest is the event of the author `name`."""
    redis = Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                entries = change_stream.entries(await redis.xrange(stream))
                if entries and _events(entries[-1:])[0].author.name == name:
                    return entries
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


@pytest.fixture
async def own_database(
    postgres: Backend, migrated_database: Callable[[str], Awaitable[str]]
) -> AsyncIterator[str]:
    """A database of the test's own, so that its service's relay is the only one."""
    url = await migrated_database(postgres.url)
    yield url
    await drop_database(postgres.url, url)


@pytest.fixture
async def own_sql(own_database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(own_database)
    yield conn
    await conn.close()


async def test_changes_wait_in_the_outbox_while_redis_is_down_and_are_relayed_after(
    own_database: str,
    settings_for: Callable[..., Settings],
    serve_authors: Serve,
    private_redis: PrivateRedis,
    own_sql: asyncpg.Connection,
    prefix: str,
) -> None:
    private_redis.stop()
    settings = settings_for(own_database, redis_url=private_redis.url, redis_timeout_seconds=0.5)
    failures = _metric("author_outbox_relay_failures_total", {"backend": "redis"})
    async with serve_authors(settings) as stub:
        created = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Kept"))
        got = await stub.GetAuthor(pb.GetAuthorRequest(id=created.id))
        assert got.name == f"{prefix} Kept"
        # Committed with its event, which waits for Redis.
        await _until(lambda: _failed_more_than(failures))
        waiting = "SELECT count(*) FROM author_outbox WHERE author_id = $1"
        assert await own_sql.fetchval(waiting, created.id) == 1
        assert _metric("author_outbox_depth") >= 1
        assert _metric("author_outbox_relay_lag_seconds") >= 0
        published = _metric("author_events_published_total")

        private_redis.start()
        entries = await _entries(private_redis.url, settings.stream, 1)
        assert [e.author for e in _events(entries)] == [created]
        await _until(lambda: _outbox_empty(own_sql))
        assert _metric("author_events_published_total") >= published + 1


async def _failed_more_than(before: float) -> bool:
    return _metric("author_outbox_relay_failures_total", {"backend": "redis"}) > before


async def test_a_relay_that_takes_over_skips_what_its_predecessor_appended(
    own_database: str,
    settings_for: Callable[..., Settings],
    serve_authors: Serve,
    redis_server: Backend,
    own_sql: asyncpg.Connection,
    prefix: str,
) -> None:
    settings = settings_for(own_database)
    # A predecessor appended the row of this change to the stream and died before
    # deleting it: the outbox still holds the row, the stream its entry.
    blocker = await asyncpg.connect(own_database)
    try:
        await blocker.execute("SELECT pg_advisory_lock($1)", RELAY_LOCK)
        waiting_rows = "SELECT count(*) FROM author_outbox"
        async with serve_authors(settings) as stub:
            created = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Once"))
            row = await own_sql.fetchrow(
                "SELECT id FROM author_outbox WHERE author_id = $1", created.id
            )
            assert row is not None
            redis = Redis.from_url(redis_server.url)
            try:
                await redis.xadd(
                    settings.stream,
                    {"prev": "0-0", "oid": str(row["id"]), "event": b"appended before"},
                )
            finally:
                await redis.aclose()
            # This process stands by while the lock is held elsewhere (the module's
            # other relays serve other databases and may be active).
            assert await own_sql.fetchval(waiting_rows) == 1
            await blocker.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK)
            await _until(lambda: _outbox_empty(own_sql))
            later = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} After"))
            entries = await _entries(redis_server.url, settings.stream, 2)
    finally:
        await blocker.close()
    assert entries[0][1][change_stream.EVENT] == b"appended before"
    assert [e.author for e in _events(entries[1:])] == [later]
    assert len(entries) == 2


async def test_the_stream_keeps_at_most_its_maximum_of_entries(
    own_database: str,
    settings_for: Callable[..., Settings],
    serve_authors: Serve,
    redis_server: Backend,
    prefix: str,
) -> None:
    settings = settings_for(own_database, stream_max_events=3)
    async with serve_authors(settings) as stub:
        for n in range(5):
            await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} {n}"))
        entries = await _until_newest(redis_server.url, settings.stream, f"{prefix} 4")
    names = [e.author.name for e in _events(entries)]
    assert names == [f"{prefix} 2", f"{prefix} 3", f"{prefix} 4"]
