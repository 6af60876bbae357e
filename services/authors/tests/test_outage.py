"""The database going away: UNAVAILABLE while it is down, recovery without a restart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc

from gatehouse_authors.settings import Settings
from gatehouse_protos.authors.v1 import authors_pb2 as pb
from gatehouse_protos.common.v1 import pagination_pb2 as page_pb
from tests.harness.private import PrivatePostgres

if TYPE_CHECKING:
    from gatehouse_protos.authors.v1.authors_pb2_grpc import AuthorsServiceAsyncStub

Failure = tuple[grpc.StatusCode, list[tuple[str, str]]]


async def test_a_stopped_database_is_unavailable_and_the_service_recovers_alone(
    private_postgres: PrivatePostgres,
    migrated_database: Callable[[str], Awaitable[str]],
    settings_for: Callable[..., Settings],
    serve_authors: Callable[[Settings], AbstractAsyncContextManager[AuthorsServiceAsyncStub]],
    expect_failure: Callable[[Awaitable[Any]], Awaitable[Failure]],
) -> None:
    url = await migrated_database(private_postgres.url)
    settings = settings_for(url, connect_timeout_seconds=2.0)
    async with serve_authors(settings) as stub:
        author = await stub.CreateAuthor(pb.CreateAuthorRequest(name="Before the outage"))
        assert (await stub.GetAuthor(pb.GetAuthorRequest(id=author.id))).id == author.id

        # The private server runs with synchronous_commit off; a checkpoint makes sure the
        # immediate stop below cannot take the rows written so far with it.
        admin = await asyncpg.connect(private_postgres.url)
        await admin.execute("CHECKPOINT")
        await admin.close()
        private_postgres.stop()
        listing = pb.ListAuthorsRequest(offset=page_pb.OffsetPage(page=1, per_page=10))
        for call in (
            stub.GetAuthor(pb.GetAuthorRequest(id=author.id), timeout=10),
            stub.CreateAuthor(pb.CreateAuthorRequest(name="During the outage"), timeout=10),
            stub.ListAuthors(listing, timeout=10),
            stub.UpdateAuthor(pb.UpdateAuthorRequest(id=author.id, name="x"), timeout=10),
            stub.DeleteAuthor(pb.DeleteAuthorRequest(id=author.id), timeout=10),
        ):
            code, _ = await expect_failure(call)
            assert code == grpc.StatusCode.UNAVAILABLE

        private_postgres.start()
        # The very first call after the restart already works: dead pooled
        # connections are replaced, no retry and no service restart needed.
        assert (await stub.GetAuthor(pb.GetAuthorRequest(id=author.id))).name == author.name
        again = await stub.CreateAuthor(pb.CreateAuthorRequest(name="After the outage"))
        names = [a.name for a in (await stub.ListAuthors(listing)).authors]
        assert names == ["Before the outage", again.name]


async def test_a_restart_between_calls_is_not_answered_with_a_dead_connection(
    private_postgres: PrivatePostgres,
    migrated_database: Callable[[str], Awaitable[str]],
    settings_for: Callable[..., Settings],
    serve_authors: Callable[[Settings], AbstractAsyncContextManager[AuthorsServiceAsyncStub]],
) -> None:
    url = await migrated_database(private_postgres.url)
    # Zero: every pooled connection counts as having idled long enough to be tested.
    settings = settings_for(url, pool_ping_idle_seconds=0.0)
    async with serve_authors(settings) as stub:
        author = await stub.CreateAuthor(pb.CreateAuthorRequest(name="Survivor"))
        admin = await asyncpg.connect(private_postgres.url)
        await admin.execute("CHECKPOINT")
        await admin.close()

        # No call while it is down: the pool still holds the connection the server killed.
        private_postgres.stop()
        private_postgres.start()

        assert (await stub.GetAuthor(pb.GetAuthorRequest(id=author.id))).name == "Survivor"
