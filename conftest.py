"""Session fixtures shared by every test: the real PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.backends import Backend, postgres_backend, redis_backend


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
