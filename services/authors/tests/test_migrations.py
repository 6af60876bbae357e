"""Schema migrations applied and reverted on an empty database with the real command."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.harness.backends import Backend
from tests.harness.databases import create_database, drop_database


@pytest.fixture
async def empty_database(postgres: Backend) -> AsyncIterator[str]:
    url = await create_database(postgres.url, "authors_migrations")
    yield url
    await drop_database(postgres.url, url)


async def _migrate(database_url: str, *arguments: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatehouse_authors",
        "migrate",
        *arguments,
        env={**os.environ, "AUTHORS_DATABASE_URL": database_url, "LOG_JSON": "false"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()


async def _schema(database_url: str) -> tuple[set[str], set[str], list[str]]:
    conn = await asyncpg.connect(database_url)
    try:
        tables = {
            r[0]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        indexes = {
            r[0]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            )
        }
        versions = (
            [r[0] for r in await conn.fetch("SELECT version_num FROM alembic_version")]
            if "alembic_version" in tables
            else []
        )
    finally:
        await conn.close()
    return tables, indexes, versions


async def test_migrations_go_up_and_down_on_an_empty_database(empty_database: str) -> None:
    await _migrate(empty_database)
    tables, indexes, versions = await _schema(empty_database)
    assert {"authors", "author_outbox", "alembic_version"} <= tables
    assert {"authors_pkey", "authors_name_key", "authors_name_trgm"} <= indexes
    assert versions == ["0003"]

    # Applying again changes nothing.
    await _migrate(empty_database, "upgrade")
    assert await _schema(empty_database) == (tables, indexes, versions)

    await _migrate(empty_database, "downgrade", "-1")
    tables, indexes, versions = await _schema(empty_database)
    assert "author_outbox" not in tables
    assert versions == ["0002"]

    await _migrate(empty_database, "downgrade", "-1")
    tables, indexes, versions = await _schema(empty_database)
    assert "authors_name_trgm" not in indexes
    assert versions == ["0001"]

    await _migrate(empty_database, "downgrade", "base")
    tables, _, versions = await _schema(empty_database)
    assert "authors" not in tables
    assert versions == []

    await _migrate(empty_database, "upgrade", "head")
    conn = await asyncpg.connect(empty_database)
    try:
        row = await conn.fetchrow("INSERT INTO authors (name) VALUES ('Ada') RETURNING id, version")
        assert row is not None
        assert (row["id"], row["version"]) == (1, 1)
    finally:
        await conn.close()


async def test_a_downgrade_needs_a_target(empty_database: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatehouse_authors",
        "migrate",
        "downgrade",
        env={**os.environ, "AUTHORS_DATABASE_URL": empty_database},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await process.communicate()
    assert process.returncode != 0
    assert b"needs a revision" in errors
