"""Alembic environment: runs migrations over asyncpg against the URL the caller passes.

The URL comes from `config.attributes["database_url"]` (set by gatehouse_authors.migrate)
rather than alembic.ini, so it never goes through configparser interpolation.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from gatehouse_authors.database import async_url
from gatehouse_authors.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(async_url(context.config.attributes["database_url"]))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


asyncio.run(_run_online())
