"""Change events: the outbox relay, which publishes committed changes to a Redis Stream.

Each write stores its event in the `author_outbox` table in the same statement as the
change (gatehouse_authors.repository), so an event exists exactly when its change was
committed. The relay moves the rows, oldest first, into the Redis Stream
`AUTHORS_STREAM` and deletes them only after Redis has answered for them: a relay or a
Redis that dies in between leaves the rows for the next pass (at least once).

- **One relay at a time.** Every replica runs one; the one holding the PostgreSQL
  advisory lock `RELAY_LOCK` (on a connection of its own) relays and the others wait to
  take over (every `AUTHORS_RELAY_STANDBY_SECONDS`). One writer keeps the stream in the
  order the relay read the outbox, which preserves each author's order of changes.
- **Woken by NOTIFY.** A trigger on the outbox notifies `author_outbox` on commit; the
  relay also looks every `AUTHORS_RELAY_POLL_SECONDS` in case a notification was missed.
- **One script per batch.** A Lua script appends a batch of entries atomically, each
  carrying the ID of the entry before it (gatehouse_kit.change_stream), and trims the
  stream by count (`MAXLEN AUTHORS_STREAM_MAX_EVENTS`) and age (`MINID` now minus
  `AUTHORS_STREAM_MAX_AGE_SECONDS`).
- **No duplicates after a crash.** A relay that takes over first reads the outbox ids of
  the newest entries (as many as a batch) and deletes, without appending them again, the
  rows a predecessor had appended but not yet deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gatehouse_authors.database import async_url
from gatehouse_authors.domain import Author, author_message
from gatehouse_kit import change_stream
from gatehouse_protos.authors.v1 import authors_pb2

log = structlog.get_logger(__name__)

# pg_advisory_lock key of the relay: "gh-relay" as a 64-bit integer.
RELAY_LOCK = 0x67682D72656C6179
NOTIFY_CHANNEL = "author_outbox"

OUTBOX_DEPTH = Gauge(
    "author_outbox_depth",
    "Changes in the outbox not yet published, as the active relay last saw them.",
)
RELAY_LAG = Gauge(
    "author_outbox_relay_lag_seconds",
    "Age of the oldest unpublished change at the active relay's last pass (0: none).",
)
EVENTS_PUBLISHED = Counter(
    "author_events_published_total",
    "Change events appended to the change stream by this process's relay.",
)
RELAY_FAILURES = Counter(
    "author_outbox_relay_failures_total",
    "Relay passes that failed (the rows stay in the outbox and are retried), by backend.",
    ["backend"],
)
# Both series exist from the start, so that rate() sees the first failure.
for _backend in ("redis", "postgres"):
    RELAY_FAILURES.labels(_backend)
RELAY_ACTIVE = Gauge(
    "author_outbox_relay_active",
    "1 while this process holds the relay lock and publishes the outbox, else 0.",
)

# KEYS[1]: the stream; ARGV: max entries, min id, then (outbox id, event) pairs.
_APPEND = """
local prev = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then prev = info[i + 1] end
  end
end
for i = 3, #ARGV, 2 do
  prev = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*',
                    'prev', prev, 'oid', ARGV[i], 'event', ARGV[i + 1])
end
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2])
return prev
"""

# One statement per pass: delete the rows the last pass published (Redis has them), and
# read the next ones. The delete's rows are excluded by id, since the statement's
# snapshot still shows them.
_NEXT_BATCH = (
    "WITH done AS (DELETE FROM author_outbox WHERE id = ANY($2::bigint[]))"
    " SELECT id, kind, author_id, name, created_at, updated_at, version, request_id,"
    " occurred_at FROM author_outbox WHERE id <> ALL($2::bigint[]) ORDER BY id LIMIT $1"
)
_OLDEST = "SELECT count(*), min(occurred_at) FROM author_outbox"
_RETRY_INITIAL = 0.1
_RETRY_MAX = 5.0


def event_of(row: Any) -> authors_pb2.AuthorEvent:
    """The AuthorEvent an outbox row stands for."""
    occurred_at = Timestamp()
    occurred_at.FromDatetime(row["occurred_at"])
    author = Author(
        row["author_id"], row["name"], row["created_at"], row["updated_at"], row["version"]
    )
    return authors_pb2.AuthorEvent(
        kind=row["kind"],
        author=author_message(author),
        request_id=row["request_id"],
        occurred_at=occurred_at,
    )


class ChangeStream:
    """The change stream as its writer sees it: appends with retention."""

    def __init__(self, redis: Redis, stream: str, max_events: int, max_age_seconds: float) -> None:
        self._script = redis.register_script(_APPEND)
        self._stream = stream
        self._max_events = max_events
        self._max_age = max_age_seconds

    async def append(self, events: Sequence[tuple[int, bytes]]) -> None:
        """Append (outbox id, serialized AuthorEvent) pairs, in order, atomically."""
        oldest_kept_ms = int((time.time() - self._max_age) * 1000)
        arguments: list[Any] = [self._max_events, f"{max(oldest_kept_ms, 0)}-0"]
        for outbox_id, event in events:
            arguments += [outbox_id, event]
        await self._script(keys=[self._stream], args=arguments)


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Where the relay reads and writes, and its pace and retention."""

    database_url: str
    stream: str
    max_events: int
    max_age_seconds: float
    batch_size: int
    poll_seconds: float
    standby_seconds: float
    connect_timeout_seconds: float
    statement_timeout_seconds: float


class OutboxRelay:
    """Publishes the outbox to the change stream while this process holds the relay lock."""

    def __init__(self, redis: Redis, settings: RelaySettings) -> None:
        self._redis = redis
        self._settings = settings
        self._stream = ChangeStream(
            redis, settings.stream, settings.max_events, settings.max_age_seconds
        )
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop relaying; rows still in the outbox wait for the next relay."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        RELAY_ACTIVE.set(0)

    async def close(self) -> None:
        await self._redis.aclose()

    async def _run(self) -> None:
        delay = _RETRY_INITIAL
        while True:
            try:
                conn = await asyncpg.connect(
                    async_url(self._settings.database_url, "postgresql"),
                    timeout=self._settings.connect_timeout_seconds,
                    command_timeout=self._settings.statement_timeout_seconds,
                )
                try:
                    await self._lead(conn)
                finally:
                    RELAY_ACTIVE.set(0)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), self._settings.connect_timeout_seconds)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                RELAY_FAILURES.labels("postgres").inc()
                log.warning(
                    "outbox relay lost its database connection",
                    error=type(error).__name__,
                    retry_in_seconds=delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _lead(self, conn: asyncpg.Connection) -> None:
        """Wait for the relay lock on `conn`, then relay until the connection fails."""
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK):  # noqa: ASYNC110 (the lock is in PostgreSQL)
            await asyncio.sleep(self._settings.standby_seconds)
        RELAY_ACTIVE.set(1)
        log.info("outbox relay active", stream=self._settings.stream)
        await conn.add_listener(NOTIFY_CHANNEL, self._notified)
        appended: set[int] | None = None
        published: list[int] = []
        delay = _RETRY_INITIAL
        while True:
            self._wake.clear()
            rows = await conn.fetch(_NEXT_BATCH, self._settings.batch_size, published)
            published = []
            await self._observe(conn, rows)
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.poll_seconds)
                continue
            try:
                if appended is None:
                    appended = await self._recently_appended()
                await self._publish([row for row in rows if row["id"] not in appended])
            except (RedisError, OSError, TimeoutError) as error:
                RELAY_FAILURES.labels("redis").inc()
                log.warning(
                    "outbox relay could not publish",
                    error=type(error).__name__,
                    pending=len(rows),
                    retry_in_seconds=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            delay = _RETRY_INITIAL
            # Deleted by the next pass, which follows at once.
            published = [row["id"] for row in rows]

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _observe(self, conn: asyncpg.Connection, rows: Sequence[Any]) -> None:
        """Set the depth and lag gauges from a pass's rows (counting only past a batch)."""
        if len(rows) < self._settings.batch_size:
            depth = len(rows)
            oldest = min((row["occurred_at"] for row in rows), default=None)
        else:
            counted = await conn.fetchrow(_OLDEST)
            depth, oldest = (counted[0], counted[1]) if counted is not None else (0, None)
        OUTBOX_DEPTH.set(depth)
        RELAY_LAG.set(max(time.time() - oldest.timestamp(), 0.0) if oldest is not None else 0.0)

    async def _recently_appended(self) -> set[int]:
        """Outbox ids among the stream's newest entries: appended, perhaps not yet deleted."""
        newest = await self._redis.xrevrange(self._settings.stream, count=self._settings.batch_size)
        return {
            int(fields[change_stream.OUTBOX_ID])
            for _, fields in change_stream.entries(newest)
            if change_stream.OUTBOX_ID in fields
        }

    async def _publish(self, rows: Sequence[Any]) -> None:
        if not rows:
            return
        await self._stream.append([(row["id"], event_of(row).SerializeToString()) for row in rows])
        EVENTS_PUBLISHED.inc(len(rows))
