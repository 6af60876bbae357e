"""The audit events table in PostgreSQL: batch writes, queries, retention deletes."""

# SQL here is formatted from constant table and column names and $n placeholders
# only; every value is a query parameter.
# ruff: noqa: S608

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gatehouse_audit.events import COLUMNS, DeadLetter, Row
from gatehouse_audit.query import EventFilter, EventQuery
from gatehouse_kit.errors import Unavailable

TABLE = "audit_events"
DEAD_LETTERS = "audit_dead_letters"
_STAGING = "audit_events_staging"
_COLUMN_LIST = ", ".join(f'"{c}"' for c in COLUMNS)

# Per connection, once: where a batch goes when it may repeat stored events.
_CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (
    event_id uuid, "timestamp" timestamptz, user_id text, username text, user_roles text[],
    action_type text, resource text, outcome text, ip_address text, user_agent text,
    request_id text, request_data text, response_status integer, error_message text,
    duration_ms double precision, trace_id text
) ON COMMIT DELETE ROWS
"""
_INSERT_FROM_STAGING = f"""
INSERT INTO {TABLE} ({_COLUMN_LIST})
SELECT {_COLUMN_LIST} FROM {_STAGING}
ON CONFLICT (event_id) DO NOTHING
"""

_INSERT_DEAD_LETTER = f"""
INSERT INTO {DEAD_LETTERS} (event_id, reason, event) VALUES ($1, $2, $3::jsonb)
ON CONFLICT (event_id) DO NOTHING
"""

# SQLSTATE classes of a refusal of the rows themselves (data exception, integrity
# constraint violation, program limit exceeded such as an oversized index entry): the
# same rows fail the same way however often they are sent.
_REFUSAL_CLASSES = frozenset({"22", "23", "54"})

# Errors that mean "the database cannot be reached right now", as opposed to
# "this batch cannot be written".
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


def is_refusal(error: BaseException) -> bool:
    """True when the database (or asyncpg, encoding a value) refused the rows themselves."""
    if isinstance(error, asyncpg.PostgresError):
        return (error.sqlstate or "")[:2] in _REFUSAL_CLASSES
    # asyncpg's client-side DataError, a value it cannot encode, is also an InterfaceError.
    return isinstance(error, asyncpg.InterfaceError) and isinstance(error, ValueError)


def is_unreachable(error: BaseException) -> bool:
    """True when `error` says the database is down or out of reach (never a refusal)."""
    return isinstance(error, UNREACHABLE) and not is_refusal(error)


@dataclass(frozen=True)
class EventPage:
    """Rows of one page, whether more follow, and the (maybe estimated) total."""

    records: list[asyncpg.Record]
    has_more: bool
    total: int
    total_is_estimate: bool


class AuditRepository:
    """SQL over the audit_events table, through one connection pool."""

    def __init__(self, pool: asyncpg.Pool, *, count_limit: int = 100_000) -> None:
        self._pool = pool
        self._count_limit = count_limit

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        max_size: int,
        connect_timeout: float = 5.0,
        command_timeout: float = 60.0,
        count_limit: int = 100_000,
    ) -> AuditRepository:
        """A repository over a new pool; the database may still be down (connects lazily)."""
        pool = asyncpg.create_pool(
            url,
            min_size=0,
            max_size=max_size,
            timeout=connect_timeout,
            command_timeout=command_timeout,
        )
        await pool
        return cls(pool, count_limit=count_limit)

    async def close(self) -> None:
        await self._pool.close()

    async def write(self, rows: Sequence[Row]) -> None:
        """Store `rows` in one transaction; events whose event_id is stored are skipped.

        The common case, no repeats, is one COPY into the table. A batch that repeats
        a stored event makes that COPY fail on the unique event_id; it is then copied
        into a temporary table and inserted from there, skipping the repeats.
        """
        async with self._pool.acquire() as conn:
            try:
                await conn.copy_records_to_table(TABLE, records=rows, columns=COLUMNS)
            except asyncpg.UniqueViolationError:
                async with conn.transaction():
                    await conn.execute(_CREATE_STAGING)
                    await conn.copy_records_to_table(_STAGING, records=rows, columns=COLUMNS)
                    await conn.execute(_INSERT_FROM_STAGING)

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Store `letters` in the dead-letter table in one transaction (once per event_id)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                _INSERT_DEAD_LETTER, [(d.event_id, d.reason, d.content) for d in letters]
            )

    async def get(self, event_id: int) -> asyncpg.Record | None:
        """The stored event with this id, if any."""
        record: asyncpg.Record | None = await self._fetch(
            "fetchrow", f"SELECT * FROM {TABLE} WHERE id = $1", event_id
        )
        return record

    async def query(self, query: EventQuery) -> EventPage:
        """One page of matching events, newest first, and the matching total."""
        where, args = _where(query.filter)
        page_where = list(where)
        page_args = list(args)
        if query.after is not None:
            page_args += [query.after.timestamp, query.after.id]
            page_where.append(f'("timestamp", id) < (${len(page_args) - 1}, ${len(page_args)})')
        page_args += [query.per_page + 1, query.offset]
        limit, offset = f"${len(page_args) - 1}", f"${len(page_args)}"
        sql = (
            f"SELECT * FROM {TABLE}{_clause(page_where)} "
            f'ORDER BY "timestamp" DESC, id DESC LIMIT {limit} OFFSET {offset}'
        )
        records = await self._fetch("fetch", sql, *page_args)
        total, estimate = await self._count(where, args)
        return EventPage(
            records=records[: query.per_page],
            has_more=len(records) > query.per_page,
            total=total,
            total_is_estimate=estimate,
        )

    async def _count(self, where: list[str], args: list[Any]) -> tuple[int, bool]:
        """COUNT up to the limit; past it, the planner's estimate (cheap on big tables)."""
        limited = (
            f"SELECT count(*) FROM (SELECT 1 FROM {TABLE}{_clause(where)} "
            f"LIMIT {self._count_limit + 1}) AS capped"
        )
        count: int = await self._fetch("fetchval", limited, *args)
        if count <= self._count_limit:
            return count, False
        plan = await self._fetch(
            "fetchval", f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {TABLE}{_clause(where)}", *args
        )
        estimated = int(json.loads(plan)[0]["Plan"]["Plan Rows"])
        return max(estimated, count), True

    async def delete_older_than(self, cutoff: datetime, limit: int) -> int:
        """Delete up to `limit` of the oldest events before `cutoff`; how many went."""
        status = await self._fetch(
            "execute",
            f"""DELETE FROM {TABLE} WHERE id IN (
                    SELECT id FROM {TABLE} WHERE "timestamp" < $1
                    ORDER BY "timestamp" LIMIT $2)""",
            cutoff,
            limit,
        )
        return int(str(status).rsplit(" ", 1)[-1])

    async def delete_dead_letters_older_than(self, cutoff: datetime, limit: int) -> int:
        """Delete up to `limit` of the oldest dead letters received before `cutoff`."""
        status = await self._fetch(
            "execute",
            f"""DELETE FROM {DEAD_LETTERS} WHERE id IN (
                    SELECT id FROM {DEAD_LETTERS} WHERE received_at < $1
                    ORDER BY received_at LIMIT $2)""",
            cutoff,
            limit,
        )
        return int(str(status).rsplit(" ", 1)[-1])

    async def _fetch(self, method: str, sql: str, *args: Any) -> Any:
        try:
            async with self._pool.acquire() as conn:
                return await getattr(conn, method)(sql, *args)
        except UNREACHABLE as error:
            raise Unavailable("the audit database is unavailable") from error


def _where(flt: EventFilter) -> tuple[list[str], list[Any]]:
    conditions: list[str] = []
    args: list[Any] = []
    for column in ("user_id", "username", "action_type", "resource", "outcome"):
        value = getattr(flt, column)
        if value is not None:
            args.append(value)
            conditions.append(f"{column} = ${len(args)}")
    if flt.start is not None:
        args.append(flt.start)
        conditions.append(f'"timestamp" >= ${len(args)}')
    if flt.end is not None:
        args.append(flt.end)
        conditions.append(f'"timestamp" < ${len(args)}')
    return conditions, args


def _clause(conditions: list[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""
