"""Recoverable subscriptions on the running stack (docs/websocket.md, Recovery by offset):
a subscriber on one gateway replica, changes written through the authors service, and
the check that a reconnect from an offset replays exactly what the stream holds after it.

"Exactly" is checked against the stream itself: the stack is shared, so other writers'
events may be in it too; the replay must be every entry after the offset, in order, and
hold the test's own changes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import redis.asyncio as redis

from gatehouse_kit import change_stream
from gatehouse_protos.authors.v1 import authors_pb2, authors_pb2_grpc
from tests.e2e import ws
from tests.e2e.conftest import client_address
from tests.e2e.replicas import http_url, replica_counts
from tests.harness.stack import Stack

if TYPE_CHECKING:
    from gatehouse_protos.authors.v1.authors_pb2_grpc import AuthorsServiceAsyncStub

STREAM = "gatehouse:authors:stream"
REDIS_URL = "redis://127.0.0.1:6379/0"
# A loaded two-core machine may take long to restart a replica or Redis, or to relay.
BACK_WITHIN_SECONDS = 120.0
EVENT_WITHIN_SECONDS = 30.0

Entry = tuple[str, authors_pb2.AuthorEvent]


def other_replica(stack: Stack, k: int) -> int:
    """Another gateway replica than k when the stack runs several, else k itself."""
    return (k + 1) % max(replica_counts(stack)["gateway"], 1)


@asynccontextmanager
async def subscriber(k: int, token: str, offset: str) -> AsyncIterator[tuple[ws.Session, Any]]:
    """A socket on gateway replica k, subscribed recoverably from `offset`; its answer.

    UNAVAILABLE (the gateway cannot read the stream yet, e.g. just after a Redis
    restart) is retried, as docs/websocket.md tells clients to.
    """
    headers = {"X-Forwarded-For": client_address()}
    async with ws.session(http_url(k), token, headers) as socket:
        async with asyncio.timeout(BACK_WITHIN_SECONDS):
            while True:
                answer = await socket.request(ws.SUBSCRIBE_AUTHORS, {"offset": offset})
                if answer["status_code"] != ws.UNAVAILABLE:
                    break
                await asyncio.sleep(0.5)
        assert answer["status_code"] == ws.OK, answer
        yield socket, answer["data"]


async def next_broadcast(socket: ws.Session) -> dict[str, Any]:
    """The next broadcast of any kind."""
    async with asyncio.timeout(EVENT_WITHIN_SECONDS):
        while True:
            frame: dict[str, Any] = json.loads(await socket.socket.recv())
            if frame["req_id"] == ws.BROADCAST_REQ_ID:
                return frame


async def broadcast_of(socket: ws.Session, author_id: int) -> dict[str, Any]:
    """The next broadcast about author `author_id` (others' changes pass by)."""
    while True:
        frame = await next_broadcast(socket)
        if frame["data"].get("id") == author_id:
            return frame


async def stream_after(offset: str) -> list[Entry]:
    """The stream's entries after `offset`, read from Redis directly."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        raw = await client.xrange(STREAM, min=f"({offset}")
    finally:
        await client.aclose()
    return [
        (entry, authors_pb2.AuthorEvent.FromString(fields[change_stream.EVENT]))
        for entry, fields in change_stream.entries(raw)
    ]


async def until(check: Callable[[], Awaitable[bool]], within: float) -> None:
    """Return once `check()` holds; at most `within` seconds."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 (the state is in other processes)
            await asyncio.sleep(0.5)


async def relayed(names: list[str], after: str) -> list[Entry]:
    """The stream after `after` once it holds an event of each author named in `names`."""
    entries: list[Entry] = []

    async def holds_all() -> bool:
        nonlocal entries
        entries = await stream_after(after)
        return set(names) <= {event.author.name for _, event in entries}

    await until(holds_all, BACK_WITHIN_SECONDS)
    return entries


@asynccontextmanager
async def authors_service(stack: Stack) -> AsyncIterator[AuthorsServiceAsyncStub]:
    """The authors service through Traefik's internal gRPC entrypoint (no gateway needed)."""
    async with grpc.aio.insecure_channel(
        stack.grpc_target, options=[("grpc.default_authority", "authors")]
    ) as channel:
        yield authors_pb2_grpc.AuthorsServiceStub(channel)


async def create(stub: AuthorsServiceAsyncStub, name: str) -> authors_pb2.Author:
    """Create an author, retrying while the platform cannot answer (a dependency away)."""
    async with asyncio.timeout(BACK_WITHIN_SECONDS):
        while True:
            try:
                created: authors_pb2.Author = await stub.CreateAuthor(
                    authors_pb2.CreateAuthorRequest(name=name), timeout=10
                )
                return created
            except grpc.aio.AioRpcError as error:
                if error.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(0.5)


async def seen_offset(k: int, token: str, stub: AuthorsServiceAsyncStub, name: str) -> str:
    """Subscribe on replica k, make a change, and return the offset of its broadcast."""
    async with subscriber(k, token, "") as (socket, answer):
        assert answer["recovered"] is True
        first = await create(stub, name)
        return str((await broadcast_of(socket, first.id))["offset"])


async def assert_recovers(k: int, token: str, offset: str, names: list[str]) -> None:
    """Reconnect to replica k from `offset`: the replay is exactly the stream after it, in
    order, holding the changes of `names` in their order."""
    expected = await relayed(names, offset)
    async with subscriber(k, token, offset) as (socket, answer):
        assert answer == {"subscribed": True, "offset": offset, "recovered": True}
        replayed = [await next_broadcast(socket) for _ in expected]
    assert [b["offset"] for b in replayed] == [entry for entry, _ in expected]
    assert [b["data"]["name"] for b in replayed] == [e.author.name for _, e in expected]
    assert [b["data"]["name"] for b in replayed if b["data"]["name"] in names] == names


async def answers(k: int) -> bool:
    """Whether gateway replica k is ready."""
    async with httpx.AsyncClient() as client:
        try:
            response = await client.get(f"{http_url(k)}/health/ready", timeout=2)
        except httpx.HTTPError:
            return False
    return response.status_code == 200
