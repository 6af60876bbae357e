"""Change events and recoverable subscriptions when processes go away (docs/authors.md,
Change events; docs/websocket.md, Recovery by offset).

A subscriber recovers exactly the events it missed across a restart of its gateway
replica and across a restart of Redis. And under kill -9: authors are created
without pause through the authors service while the replica whose relay publishes the
outbox is killed, twice, and Redis is killed and started again; afterwards every created
author has exactly one creation event in the change stream and the outbox is empty.
Changes committed while no relay could publish them (rows found waiting in the outbox
right after each kill) prove the kills fell between commit and publish. Real processes
of the running stack throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest
import redis.asyncio as redis
from websockets.exceptions import ConnectionClosed

from benchmarks.common import ProcessTable
from gatehouse_kit import change_stream
from gatehouse_protos.authors.v1 import authors_pb2
from tests.chaos.observe import replicas, scrape, supervised
from tests.chaos.outage import poll
from tests.e2e.recovery import (
    BACK_WITHIN_SECONDS,
    REDIS_URL,
    STREAM,
    answers,
    assert_recovers,
    authors_service,
    broadcast_of,
    create,
    next_broadcast,
    other_replica,
    relayed,
    seen_offset,
    subscriber,
    until,
)
from tests.e2e.replicas import METRICS_PORTS
from tests.harness.backends import run_script
from tests.harness.stack import NATIVE_STATE, Stack

log = logging.getLogger(__name__)

pytestmark = pytest.mark.timeout(600)

AUTHORS_DB = "postgresql://gatehouse:gatehouse@127.0.0.1:5432/authors"
CHANGES = 1200
WRITERS = 6
# Kill points, by changes committed so far.
KILL_RELAY_AT = (250, 850)
KILL_REDIS_AT = 550
# Generous bounds for a loaded two-core machine.
TAKEOVER_SECONDS = 60.0
SETTLE_SECONDS = 180.0


async def _newest_offset() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        newest = change_stream.entries(await client.xrevrange(STREAM, count=1))
    finally:
        await client.aclose()
    return newest[0][0] if newest else change_stream.ORIGIN


async def _created_events(after: str, prefix: str) -> list[tuple[str, str]]:
    """(offset, name) of the creation events of this test's authors after `after`."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        raw = await client.xrange(STREAM, min=f"({after}")
    finally:
        await client.aclose()
    found = []
    for offset, fields in change_stream.entries(raw):
        event = authors_pb2.AuthorEvent.FromString(fields[change_stream.EVENT])
        if event.kind == authors_pb2.AuthorEvent.KIND_CREATED and event.author.name.startswith(
            prefix
        ):
            found.append((offset, event.author.name))
    return found


async def _active_relay(programs: list[str]) -> str | None:
    """The authors replica whose relay holds the lock, if one does now."""
    async with httpx.AsyncClient() as client:
        for program in programs:
            k = int(program.rsplit("-", 1)[1])
            url = f"http://127.0.0.1:{METRICS_PORTS['authors'] + 100 * k}/metrics"
            try:
                samples = await scrape(client, url)
            except httpx.HTTPError:
                continue
            if samples.get("author_outbox_relay_active") == 1:
                return program
    return None


async def _kill_active_relay(stack: Stack) -> str:
    programs = replicas(supervised(stack), "authors")
    active: str | None = None

    async def found() -> bool:
        nonlocal active
        active = await _active_relay(programs)
        return active is not None

    async with asyncio.timeout(TAKEOVER_SECONDS):
        await poll(found)
    assert active is not None
    os.kill(_service_process(supervised(stack)[active]), signal.SIGKILL)
    return active


def _service_process(supervised_pid: int) -> int:
    """The Python process of the service under a supervised program (`uv run` starts it as
    a child): killing it, not its parent, is the crash; `uv` then exits and supervisord
    starts the program again."""
    for pid in ProcessTable.read().descendants(supervised_pid):
        with contextlib.suppress(OSError):
            program, *arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00")
            if program.endswith(b"python") and arguments[:2] == [b"-m", b"gatehouse_authors"]:
                return pid
    raise AssertionError(f"no authors service process under pid {supervised_pid}")


def _kill_redis() -> None:
    pid = int((NATIVE_STATE / "redis" / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def outbox() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(AUTHORS_DB)
    yield conn
    await conn.close()


async def test_kill_9_of_the_relay_and_of_redis_loses_no_change_event(
    stack: Stack, outbox: asyncpg.Connection
) -> None:
    # With one authors replica, supervisord starts the killed one again and it takes the
    # lock back; with two, the other takes over.
    assert stack.native, "the test kills programs of the native stack"
    prefix = f"chaos-events-{uuid.uuid4().hex[:8]}-"
    start = await _newest_offset()
    names = iter(f"{prefix}{n:05d}" for n in range(CHANGES))
    committed: list[str] = []
    failures: Counter[str] = Counter()
    kills: list[str] = []
    # Rows waiting in the outbox right after each kill: committed, not yet published.
    waiting: list[int] = []
    reached = {at: asyncio.Event() for at in (*KILL_RELAY_AT, KILL_REDIS_AT)}

    async with authors_service(stack) as stub:

        async def write() -> None:
            for name in names:
                # An answer lost to a kill may hide a commit: the same name again tells.
                while True:
                    try:
                        await stub.CreateAuthor(
                            authors_pb2.CreateAuthorRequest(name=name), timeout=10
                        )
                        break
                    except grpc.aio.AioRpcError as error:
                        if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                            break
                        failures[error.code().name] += 1
                        await asyncio.sleep(0.2)
                committed.append(name)
                for at, event in reached.items():
                    if len(committed) >= at:
                        event.set()

        async def pending() -> None:
            await asyncio.sleep(0.5)
            waiting.append(int(await outbox.fetchval("SELECT count(*) FROM author_outbox")))

        async def chaos() -> None:
            await reached[KILL_RELAY_AT[0]].wait()
            kills.append(await _kill_active_relay(stack))
            await pending()
            await reached[KILL_REDIS_AT].wait()
            _kill_redis()
            await pending()
            await asyncio.sleep(1.5)
            await asyncio.to_thread(run_script, "redis.sh", "start")
            await reached[KILL_RELAY_AT[1]].wait()
            kills.append(await _kill_active_relay(stack))
            await pending()

        await asyncio.gather(chaos(), *(write() for _ in range(WRITERS)))

    stored = {
        row["name"]
        for row in await outbox.fetch(
            "SELECT name FROM authors WHERE name LIKE $1", prefix.replace("_", "\\_") + "%"
        )
    }
    assert stored == set(committed)
    assert len(stored) == CHANGES

    events: list[tuple[str, str]] = []

    async def all_relayed() -> bool:
        nonlocal events
        events = await _created_events(start, prefix)
        return {name for _, name in events} >= stored

    async def outbox_empty() -> bool:
        return int(await outbox.fetchval("SELECT count(*) FROM author_outbox")) == 0

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SETTLE_SECONDS):
            await poll(all_relayed, interval=1.0)
            await poll(outbox_empty, interval=1.0)
    seen = Counter(name for _, name in events)
    lost = stored - set(seen)
    duplicated = {name: n for name, n in seen.items() if n > 1}
    log.info(
        "changes %d, creation events %d, lost %d, duplicated %d, killed relays %s, "
        "outbox rows waiting after each kill %s, calls retried %s",
        len(stored),
        len(events),
        len(lost),
        len(duplicated),
        kills,
        waiting,
        dict(failures),
    )
    assert not lost, f"{len(lost)} changes have no event, e.g. {sorted(lost)[:5]}"
    assert not duplicated, f"events published twice: {list(duplicated.items())[:5]}"
    assert await outbox_empty()
    assert max(waiting) > 0, "no kill fell between a commit and its publication"


async def test_a_subscriber_recovers_across_its_gateway_replica_restart(stack: Stack) -> None:
    prefix = f"chaos-recovery-{uuid.uuid4().hex[:8]}"
    token = await asyncio.to_thread(stack.token, "viewer")
    async with authors_service(stack) as stub:
        async with subscriber(0, token, "") as (socket, _):
            first = await create(stub, f"{prefix} seen")
            offset = (await broadcast_of(socket, first.id))["offset"]
            stack.stop("gateway-0")
            # The replica closed the socket (1001) on its way out.
            with pytest.raises(ConnectionClosed):
                await next_broadcast(socket)
        try:
            # Written to the authors service directly: no gateway is needed for a change.
            names = [f"{prefix} while away {n}" for n in range(3)]
            for name in names:
                await create(stub, name)
        finally:
            stack.start("gateway-0")
    await until(lambda: answers(0), BACK_WITHIN_SECONDS)
    await assert_recovers(0, token, offset, names)


async def test_a_subscriber_recovers_across_a_redis_restart(stack: Stack) -> None:
    prefix = f"chaos-recovery-{uuid.uuid4().hex[:8]}"
    token = await asyncio.to_thread(stack.token, "viewer")
    async with authors_service(stack) as stub:
        offset = await seen_offset(0, token, stub, f"{prefix} seen")
        # Relayed before Redis goes: kept by its append-only file.
        before = f"{prefix} before the restart"
        await create(stub, before)
        await relayed([before], offset)
        await asyncio.to_thread(run_script, "redis.sh", "stop")
        try:
            # Committed while Redis is down: kept in the outbox until it is back.
            during = f"{prefix} while redis is down"
            await create(stub, during)
        finally:
            await asyncio.to_thread(run_script, "redis.sh", "start")
        after = f"{prefix} after the restart"
        await create(stub, after)
    await until(lambda: answers(0), BACK_WITHIN_SECONDS)
    await assert_recovers(other_replica(stack, 0), token, offset, [before, during, after])
