"""Fixtures of the authors tests: a migrated throwaway database per module, and the
service served in-process on a free port and called through a real gRPC channel.

Test modules are not importable from one another here, so what they share comes as
fixtures typed with library types only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from grpc_status import rpc_status

from gatehouse_authors import migrate
from gatehouse_authors.app import build_app
from gatehouse_authors.settings import Settings
from gatehouse_kit.errors import field_violations
from gatehouse_kit.grpc_client import open_channel
from gatehouse_protos.authors.v1.authors_pb2_grpc import AuthorsServiceStub
from tests.harness.backends import Backend
from tests.harness.databases import create_database, drop_database

if TYPE_CHECKING:
    from gatehouse_protos.authors.v1.authors_pb2_grpc import AuthorsServiceAsyncStub

Failure = tuple[grpc.StatusCode, list[tuple[str, str]]]


@pytest.fixture(scope="session")
def settings_for(redis_server: Backend) -> Callable[..., Settings]:
    """Settings of a test service on `database_url`: free ports, its own change stream."""

    def make(database_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis_url": redis_server.url,
            "stream": f"test:authors:{uuid.uuid4().hex}",
            "grpc_port": 0,
            "metrics_port": 0,
            "migrate_on_start": False,
            **overrides,
        }
        return Settings(**values)

    return make


@asynccontextmanager
async def _serve(settings: Settings) -> AsyncIterator[AuthorsServiceAsyncStub]:
    service = build_app(settings).grpc_service(settings)
    await service.start()
    # No client retries: the tests look at each call's own status.
    channel = open_channel(f"127.0.0.1:{service.port}", max_attempts=1)
    try:
        yield AuthorsServiceStub(channel)
    finally:
        await channel.close()
        await service.stop()


@pytest.fixture(scope="session")
def serve_authors() -> Callable[[Settings], AbstractAsyncContextManager[AuthorsServiceAsyncStub]]:
    """Serve the authors service with the given settings for the duration of an `async with`."""
    return _serve


@pytest.fixture(scope="session")
def migrated_database() -> Callable[[str], Awaitable[str]]:
    """Create a database on the server `admin_url` names, at the newest schema revision."""

    async def make(admin_url: str) -> str:
        url = await create_database(admin_url, "authors_test")
        await asyncio.to_thread(migrate.upgrade, url)
        return url

    return make


@pytest.fixture(scope="module")
async def database_url(
    postgres: Backend, migrated_database: Callable[[str], Awaitable[str]]
) -> AsyncIterator[str]:
    """This test module's own migrated database on the session's PostgreSQL."""
    url = await migrated_database(postgres.url)
    yield url
    await drop_database(postgres.url, url)


@pytest.fixture(scope="module")
def service_settings(database_url: str, settings_for: Callable[..., Settings]) -> Settings:
    return settings_for(database_url)


@pytest.fixture(scope="module")
async def stub(
    service_settings: Settings,
    serve_authors: Callable[[Settings], AbstractAsyncContextManager[AuthorsServiceAsyncStub]],
) -> AsyncIterator[AuthorsServiceAsyncStub]:
    """A client of the service on this module's database, shared by the module's tests."""
    async with serve_authors(service_settings) as client:
        yield client


@pytest.fixture
async def sql(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to this module's database, to check what was (not) written."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def _expect_failure(call: Awaitable[Any]) -> Failure:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    status = rpc_status.from_call(raised.value)
    return raised.value.code(), field_violations(status) if status else []


@pytest.fixture(scope="session")
def expect_failure() -> Callable[[Awaitable[Any]], Awaitable[Failure]]:
    """Await a call that must fail; return its status code and field violations."""
    return _expect_failure


@pytest.fixture
def prefix() -> str:
    """A name prefix no other test uses, so tests sharing a database stay apart."""
    return f"t{uuid.uuid4().hex[:10]}"
