"""The gateways' edge cache of author reads, with two replicas (docs/performance.md,
Edge cache): a write through either replica is read through the other as soon as its
change event arrives; a change whose event never comes (or comes late) is served stale
for at most the cache's TTL; and the cache really answers (its hits are counted)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import pytest

from tests.e2e.conftest import Tokens, client_address
from tests.e2e.replicas import counter, http_url, two_replicas
from tests.harness.stack import Stack

# The gateway's default GATEWAY_AUTHOR_CACHE_TTL_SECONDS.
TTL_SECONDS = 5.0
# A change event crosses Redis to every replica well within this.
EVENT_WITHIN_SECONDS = 1.0
# Polls stay well inside the admin's rate limit (1,000 requests a minute).
POLL_SECONDS = 0.1
AUTHORS_DB = "postgresql://gatehouse:gatehouse@127.0.0.1:5432/authors"


@pytest.fixture(scope="module")
def replicated(stack: Stack) -> Stack:
    """The stack with two replicas of every service."""
    two_replicas(stack)
    return stack


@pytest.fixture
async def replicas() -> AsyncIterator[list[httpx.AsyncClient]]:
    """A client of each gateway replica's own port."""
    # One client address of the suite's own (tests/e2e/conftest.py), as every e2e client.
    headers = {"X-Forwarded-For": client_address()}
    async with (
        httpx.AsyncClient(base_url=http_url(0), headers=headers, timeout=10) as first,
        httpx.AsyncClient(base_url=http_url(1), headers=headers, timeout=10) as second,
    ):
        yield [first, second]


async def _read_until(
    client: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    done: Callable[[httpx.Response], bool],
    within: float,
) -> tuple[httpx.Response, float]:
    """GET `path` until `done(response)`; the response and how long it took."""
    started = time.monotonic()
    while True:
        response = await client.get(path, headers=headers)
        elapsed = time.monotonic() - started
        if done(response) or elapsed > within:
            return response, elapsed
        await asyncio.sleep(POLL_SECONDS)


async def _hits(k: int) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        return await counter(
            client, "gateway", k, "gateway_author_cache_lookups_total", result="hit"
        )


@pytest.mark.parametrize(("writer", "reader"), [(0, 1), (1, 0)])
async def test_a_write_through_either_replica_is_read_through_the_other(
    replicated: Stack,
    tokens: Tokens,
    replicas: list[httpx.AsyncClient],
    writer: int,
    reader: int,
) -> None:
    admin = await tokens.headers("admin")
    reads = await tokens.headers("admin")
    created = await replicas[writer].post(
        "/authors", json={"name": f"cache-{uuid.uuid4()}"}, headers=admin
    )
    assert created.status_code == 201, created.text
    path = f"/authors/{created.json()['id']}"
    # Warm the reader's cache, and see that it answers from it.
    hits = await _hits(reader)
    for _ in range(3):
        first = await replicas[reader].get(path, headers=reads)
        assert first.json() == created.json()
    assert await _hits(reader) >= hits + 2

    renamed = await replicas[writer].put(
        path, json={"name": f"cache-{uuid.uuid4()}"}, headers=admin
    )
    assert renamed.status_code == 200, renamed.text
    seen, elapsed = await _read_until(
        replicas[reader],
        path,
        reads,
        lambda r: r.status_code == 200 and r.json() == renamed.json(),
        EVENT_WITHIN_SECONDS,
    )
    assert seen.json() == renamed.json(), f"still stale after {elapsed:.2f} s"
    assert seen.headers["etag"] == renamed.headers["etag"]

    deleted = await replicas[writer].delete(path, headers=admin)
    assert deleted.status_code == 204
    gone, elapsed = await _read_until(
        replicas[reader], path, reads, lambda r: r.status_code == 404, EVENT_WITHIN_SECONDS
    )
    assert gone.status_code == 404, f"still served {elapsed:.2f} s after the deletion"


async def test_a_change_without_an_event_is_stale_for_at_most_the_ttl(
    replicated: Stack, tokens: Tokens, replicas: list[httpx.AsyncClient]
) -> None:
    """A change committed with no event (here: written to PostgreSQL behind the authors
    service's back; the service's own writes always have one, but it may come late while
    no relay can publish it) is served by a replica that cached the author before for no
    longer than the TTL."""
    assert replicated.native, "the test writes to the native stack's authors database"
    admin = await tokens.headers("admin")
    reads = await tokens.headers("admin")
    created = await replicas[0].post(
        "/authors", json={"name": f"cache-{uuid.uuid4()}"}, headers=admin
    )
    assert created.status_code == 201, created.text
    author_id = created.json()["id"]
    path = f"/authors/{author_id}"
    assert (await replicas[1].get(path, headers=reads)).json() == created.json()
    silent_name = f"silent-{uuid.uuid4()}"
    connection = await asyncpg.connect(AUTHORS_DB)
    try:
        await connection.execute(
            "UPDATE authors SET name = $1, version = version + 1 WHERE id = $2",
            silent_name,
            author_id,
        )
        changed_at = time.monotonic()
        seen, _ = await _read_until(
            replicas[1],
            path,
            reads,
            lambda r: r.json().get("name") == silent_name,
            TTL_SECONDS + 2.0,
        )
        elapsed = time.monotonic() - changed_at
    finally:
        await connection.close()
    assert seen.json()["name"] == silent_name, f"still stale after {elapsed:.2f} s"
    assert elapsed <= TTL_SECONDS + 0.5
    await replicas[0].delete(path, headers=admin)
