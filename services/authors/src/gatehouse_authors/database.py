"""The asyncpg engine: pool settings, statement metrics, slow-query log, error mapping.

Every statement is timed by operation (the `operation` execution option a repository
passes, else the SQL verb). Errors that mean "the database cannot be reached" become
`Unavailable`, so callers see UNAVAILABLE rather than INTERNAL and can retry.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from gatehouse_kit.errors import Unavailable

log = structlog.get_logger(__name__)

DB_QUERY_DURATION = Histogram(
    "db_query_duration_seconds",
    "Time spent executing one SQL statement, by operation.",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DB_SLOW_QUERIES = Counter(
    "db_slow_queries_total",
    "SQL statements slower than the configured slow-query threshold, by operation.",
    ["operation"],
)


class PoolConnections(Collector):
    """`db_pool_connections{state}`: in_use (checked out) and idle connections, and
    `db_pool_connections_max`: what the pools may open at most (size + overflow); read
    from the pools of every live engine at scrape time, so the figures are never stale."""

    def __init__(self) -> None:
        self._engines: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()

    def track(self, engine: Engine, max_connections: int) -> None:
        self._engines[engine] = max_connections

    def collect(self) -> Iterator[Metric]:
        in_use = idle = limit = 0
        for engine, max_connections in list(self._engines.items()):
            # dispose() swaps in a new pool, so the engine's current one is read each time.
            pool = engine.pool
            if isinstance(pool, QueuePool):
                in_use += pool.checkedout()
                idle += pool.checkedin()
                limit += max_connections
        family = GaugeMetricFamily(
            "db_pool_connections",
            "Database pool connections by state: in_use (checked out) or idle.",
            labels=["state"],
        )
        family.add_metric(["in_use"], in_use)
        family.add_metric(["idle"], idle)
        yield family
        yield GaugeMetricFamily(
            "db_pool_connections_max",
            "Connections the database pools may hold at most (pool size plus overflow).",
            value=limit,
        )


DB_POOL_CONNECTIONS = PoolConnections()
REGISTRY.register(DB_POOL_CONNECTIONS)

# Long statements are cut in the log; values never appear since only the SQL text
# with its $n placeholders is logged.
STATEMENT_LOG_CHARS = 300

# SQLSTATE classes and codes meaning the server cannot serve us right now.
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def async_url(url: str, drivername: str = "postgresql+asyncpg") -> str:
    """`url` with the asyncpg driver (or as plain `postgresql` for asyncpg itself),
    whichever postgres scheme it was written with."""
    parsed = make_url(url)
    return parsed.set(drivername=drivername).render_as_string(hide_password=False)


def _operation(context: Any, statement: str) -> str:
    named = context.execution_options.get("operation") if context is not None else None
    if isinstance(named, str):
        return named
    verb = statement.lstrip().split(None, 1)
    return verb[0].lower() if verb else "other"


def _instrument(engine: AsyncEngine, slow_query_seconds: float, max_connections: int) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _started(
        conn: Connection, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        conn.info["query_started"] = time.perf_counter()

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _finished(
        conn: Connection, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        elapsed = time.perf_counter() - conn.info.pop("query_started", time.perf_counter())
        operation = _operation(context, statement)
        DB_QUERY_DURATION.labels(operation).observe(elapsed)
        if elapsed >= slow_query_seconds:
            DB_SLOW_QUERIES.labels(operation).inc()
            log.warning(
                "slow query",
                operation=operation,
                seconds=round(elapsed, 4),
                statement=" ".join(statement.split())[:STATEMENT_LOG_CHARS],
            )

    DB_POOL_CONNECTIONS.track(sync_engine, max_connections)


def _ping_after_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """Test a pooled connection before use if it sat idle longer than `idle_seconds`.

    SQLAlchemy's pre-ping does this on every checkout, which costs a round trip per
    call. Under load connections are reused within milliseconds, and a connection that
    dies while busy fails its statement, which invalidates the whole pool; so pinging
    only connections that idled long enough for the server to have gone away meanwhile
    keeps the same guarantee (a restart is never answered with a dead connection)
    without the round trip on the hot path.
    """
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _idle(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError("pooled connection is dead") from error


def make_engine(
    database_url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 5.0,
    connect_timeout: float = 5.0,
    statement_timeout: float = 10.0,
    slow_query_seconds: float = 0.25,
    ping_idle_seconds: float = 1.0,
) -> AsyncEngine:
    """An instrumented engine whose pool replaces connections that died meanwhile.

    Each statement runs on its own (autocommit): every repository operation is a
    single statement, so explicit BEGIN/COMMIT round trips would only add latency.
    Connections idle for `ping_idle_seconds` are tested before use, so after a database
    restart the first call already gets a fresh connection instead of a dead one.
    """
    engine = create_async_engine(
        async_url(database_url),
        isolation_level="AUTOCOMMIT",
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        # Author names are user data: keep them out of exception messages and logs.
        hide_parameters=True,
        connect_args={"timeout": connect_timeout, "command_timeout": statement_timeout},
    )
    _instrument(engine, slow_query_seconds, pool_size + max(max_overflow, 0))
    _ping_after_idle(engine, ping_idle_seconds)
    return engine


def _sqlstate(error: BaseException) -> str | None:
    seen: BaseException | None = error
    while seen is not None:
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return None


def is_unavailable(error: BaseException) -> bool:
    """True when `error` says the database is unreachable, restarting or out of connections."""
    if isinstance(error, exc.TimeoutError | OSError | TimeoutError):
        return True
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, exc.InterfaceError):
            return True
        if isinstance(error.orig, OSError | TimeoutError):
            return True
    state = _sqlstate(error)
    return state is not None and state.startswith(_UNAVAILABLE_SQLSTATES)


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn "database unreachable" errors into `Unavailable`; let the others through."""
    try:
        yield
    except Exception as error:
        if is_unavailable(error):
            log.warning("database unavailable", error=type(error).__name__)
            raise Unavailable("the authors database is unavailable") from error
        raise
