"""The service's metrics move with the work it does, as Prometheus would scrape them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import structlog
from prometheus_client import REGISTRY

from gatehouse_authors.settings import Settings
from gatehouse_protos.authors.v1 import authors_pb2 as pb

if TYPE_CHECKING:
    from gatehouse_protos.authors.v1.authors_pb2_grpc import AuthorsServiceAsyncStub

SERVICE = "gatehouse.authors.v1.AuthorsService"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _settled(name: str, expected: float, **labels: str) -> float:
    """The sample once it is `expected`, or as it is after 5 s: a refused call is counted
    just after its status went out, so the caller may hold the status first."""
    for _ in range(500):
        if (value := _sample(name, **labels)) == expected:
            break
        await asyncio.sleep(0.01)
    return value


async def test_calls_and_statements_are_counted_and_timed(
    stub: AuthorsServiceAsyncStub,
    expect_failure: Callable[[Awaitable[Any]], Awaitable[tuple[grpc.StatusCode, Any]]],
    prefix: str,
) -> None:
    author = await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Counted"))
    gets = _sample("db_query_duration_seconds_count", operation="get")
    lists = _sample("db_query_duration_seconds_count", operation="list")
    counts = _sample("db_query_duration_seconds_count", operation="count")
    ok = _sample(
        "grpc_server_handled_total", grpc_service=SERVICE, grpc_method="GetAuthor", grpc_code="OK"
    )
    missing = _sample(
        "grpc_server_handled_total",
        grpc_service=SERVICE,
        grpc_method="GetAuthor",
        grpc_code="NOT_FOUND",
    )

    await stub.GetAuthor(pb.GetAuthorRequest(id=author.id))
    await stub.ListAuthors(pb.ListAuthorsRequest(filter=pb.AuthorFilter(search=prefix)))
    # Past the last page the total needs a statement of its own.
    await stub.ListAuthors(pb.ListAuthorsRequest(filter=pb.AuthorFilter(search=f"{prefix}-none")))
    code, _ = await expect_failure(stub.GetAuthor(pb.GetAuthorRequest(id=10**15)))
    assert code == grpc.StatusCode.NOT_FOUND

    assert _sample("db_query_duration_seconds_count", operation="get") == gets + 2
    assert _sample("db_query_duration_seconds_count", operation="list") == lists + 2
    assert _sample("db_query_duration_seconds_count", operation="count") == counts + 1
    assert (
        _sample(
            "grpc_server_handled_total",
            grpc_service=SERVICE,
            grpc_method="GetAuthor",
            grpc_code="OK",
        )
        == ok + 1
    )
    assert (
        await _settled(
            "grpc_server_handled_total",
            missing + 1,
            grpc_service=SERVICE,
            grpc_method="GetAuthor",
            grpc_code="NOT_FOUND",
        )
        == missing + 1
    )


async def test_pool_gauges_show_connections_in_use_and_idle(
    stub: AuthorsServiceAsyncStub, sql: asyncpg.Connection, prefix: str
) -> None:
    await stub.CreateAuthor(pb.CreateAuthorRequest(name=f"{prefix} Pooled"))
    assert _sample("db_pool_connections", state="in_use") == 0
    assert _sample("db_pool_connections", state="idle") >= 1
    assert _sample("db_pool_connections_max") >= 2

    # Hold the table so that a listing waits inside the database with its connection out.
    locked = sql.transaction()
    await locked.start()
    await sql.execute("LOCK TABLE authors IN ACCESS EXCLUSIVE MODE")

    async def list_all() -> pb.ListAuthorsResponse:
        return await stub.ListAuthors(pb.ListAuthorsRequest())

    listing = asyncio.create_task(list_all())
    # A gauge has nothing to await: it is read, as a scrape would, until it shows the call.
    async with asyncio.timeout(10):
        while _sample("db_pool_connections", state="in_use") < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await locked.rollback()
    assert (await listing).authors
    assert _sample("db_pool_connections", state="in_use") == 0


async def test_slow_statements_are_counted_and_logged_without_their_values(
    database_url: str,
    settings_for: Callable[..., Settings],
    serve_authors: Callable[[Settings], AbstractAsyncContextManager[AuthorsServiceAsyncStub]],
    prefix: str,
) -> None:
    secret_name = f"{prefix} do-not-log-me"
    slow = _sample("db_slow_queries_total", operation="insert")
    with structlog.testing.capture_logs() as logs:
        async with serve_authors(settings_for(database_url, slow_query_seconds=0)) as client:
            await client.CreateAuthor(pb.CreateAuthorRequest(name=secret_name))

    assert _sample("db_slow_queries_total", operation="insert") == slow + 1
    [entry] = [e for e in logs if e["event"] == "slow query" and e["operation"] == "insert"]
    assert entry["statement"].startswith("WITH changed AS (INSERT INTO authors (name) VALUES ($")
    assert secret_name not in repr(logs)
