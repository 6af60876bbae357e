"""The test harness reaches real servers, and private ones stop and start for real."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.harness.backends import Backend
from tests.harness.databases import create_database, drop_database
from tests.harness.private import PrivatePostgres, PrivateRedis


async def test_session_postgres_is_real_and_gives_throwaway_databases(postgres: Backend) -> None:
    url = await create_database(postgres.url, "harness")
    conn = await asyncpg.connect(url)
    try:
        version = await conn.fetchval("SHOW server_version_num")
        assert int(version) >= 150000
    finally:
        await conn.close()
    await drop_database(postgres.url, url)
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncpg.connect(url)


async def test_session_redis_is_real(redis_server: Backend) -> None:
    client = aioredis.from_url(redis_server.url)
    try:
        info = await client.info("server")
        assert int(str(info["redis_version"]).split(".")[0]) >= 7
    finally:
        await client.aclose()


async def test_private_postgres_stops_and_starts(private_postgres: PrivatePostgres) -> None:
    conn = await asyncpg.connect(private_postgres.url)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()
    private_postgres.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(private_postgres.url, timeout=2)
    private_postgres.start()
    conn = await asyncpg.connect(private_postgres.url)
    assert await conn.fetchval("SELECT 2") == 2
    await conn.close()


async def test_private_redis_stops_and_starts(private_redis: PrivateRedis) -> None:
    client = aioredis.from_url(private_redis.url)
    assert await client.ping()
    private_redis.stop()
    with pytest.raises(aioredis.ConnectionError):
        await client.ping()
    private_redis.start()
    assert await client.ping()
    await client.aclose()
