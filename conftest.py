"""Session fixtures shared by every test: the real PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.backends import Backend, postgres_backend, redis_backend
from tests.harness.private import PrivatePostgres, PrivateRedis


@pytest.fixture(scope="session")
def postgres() -> Iterator[Backend]:
    """The session's PostgreSQL server (superuser URL to the `postgres` database)."""
    with postgres_backend() as backend:
        yield backend


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Backend]:
    """The session's Redis server."""
    with redis_backend() as backend:
        yield backend


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the test's own, which it may stop and start."""
    server = PrivatePostgres()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis server of the test's own, which it may stop and start."""
    server = PrivateRedis()
    server.start()
    yield server
    server.destroy()
