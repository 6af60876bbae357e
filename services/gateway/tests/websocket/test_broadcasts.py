"""Broadcasts across gateway replicas, slow readers, Redis outages and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from typing import Any

import redis.asyncio as redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gatehouse_authors.events import ChangeStream
from gatehouse_gateway.websocket.protocol import PkgId
from gatehouse_protos.authors.v1 import authors_pb2

NOBODY = {"name": "no author has this name"}


async def test_broadcast_reaches_subscribers_on_another_replica(
    serve_gateway: Any, issuer: Any, ws: Any
) -> None:
    name = f"Broadcast {uuid.uuid4().hex[:8]}"
    async with (
        serve_gateway() as replica_a,
        serve_gateway() as replica_b,
        ws(replica_a, issuer.token("viewer")) as on_a,
        ws(replica_b, issuer.token("viewer"), fmt="protobuf") as on_b,
        ws(replica_b, issuer.token("editor")) as writer,
    ):
        for subscriber in (on_a, on_b):
            assert (await subscriber.request(PkgId.SUBSCRIBE_AUTHORS))["status_code"] == 0
        created = (await writer.request(PkgId.CREATE_AUTHOR, {"name": name}))["data"]
        renamed = (
            await writer.request(PkgId.UPDATE_AUTHOR, {"id": created["id"], "name": name + "!"})
        )["data"]
        await writer.request(PkgId.DELETE_AUTHOR, {"id": created["id"]})
        for subscriber in (on_a, on_b):
            seen = [await subscriber.broadcast() for _ in range(3)]
            assert [(b["pkg_id"], b["req_id"]) for b in seen] == [
                (100, "00000000-0000-0000-0000-000000000000"),
                (101, "00000000-0000-0000-0000-000000000000"),
                (102, "00000000-0000-0000-0000-000000000000"),
            ]
            assert seen[0]["data"] == created
            assert seen[1]["data"] == renamed
            assert seen[2]["data"]["id"] == created["id"]
            # A subscription without an offset gets the frames it always got.
            assert all("offset" not in b for b in seen)
        # The writer never subscribed, so it got no broadcast.
        assert writer.broadcasts == []


async def test_unsubscribed_socket_gets_no_broadcasts(gateway: Any, issuer: Any, ws: Any) -> None:
    async with ws(gateway, issuer.token("editor")) as client:
        await client.request(PkgId.SUBSCRIBE_AUTHORS)
        await client.request(PkgId.UNSUBSCRIBE_AUTHORS)
        await client.request(PkgId.CREATE_AUTHOR, {"name": uuid.uuid4().hex})
        # The subscribed round trip below comes after the creation's event would have.
        await client.request(PkgId.GET_AUTHORS, NOBODY)
        assert client.broadcasts == []


def _event(name: str) -> bytes:
    author = authors_pb2.Author(id=1, name=name, version=1)
    return authors_pb2.AuthorEvent(
        kind=authors_pb2.AuthorEvent.KIND_UPDATED, author=author
    ).SerializeToString()


def change_stream_of(redis_url: str, stream: str) -> tuple[redis.Redis, ChangeStream]:
    """A client of `redis_url` and the change stream `stream` written as the relay does."""
    client = redis.Redis.from_url(redis_url)
    return client, ChangeStream(client, stream, max_events=10_000, max_age_seconds=3600)


async def test_slow_reader_is_closed_and_others_keep_their_latency(
    serve_gateway: Any, issuer: Any, ws: Any, redis_server: Any
) -> None:
    async with serve_gateway(ws_send_queue_size=16) as gateway:
        # A client that reads nothing, with a tiny receive buffer so the server feels it.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", gateway.port))
        # Administrators: their message limit leaves room for this many requests.
        headers = {"Authorization": f"Bearer {issuer.token('admin')}"}
        async with (
            connect(
                gateway.url, sock=raw, additional_headers=headers, max_queue=1, compression=None
            ) as slow,
            ws(gateway, issuer.token("admin")) as fast,
        ):
            assert '"auth_ok"' in str(await slow.recv())
            await slow.send(
                '{"pkg_id":10,"req_id":"3c1e5b8e-6a43-4c1e-9d7f-2b6e8a4d9c01","data":{}}'
            )
            assert '"subscribed":true' in str(await slow.recv())
            assert (await fast.request(PkgId.SUBSCRIBE_AUTHORS))["status_code"] == 0
            client, stream = change_stream_of(
                redis_server.url, gateway.context.settings.authors_stream
            )
            # Enough to fill the kernel's buffers on loopback, then the queue.
            big = _event("x" * 64_000)
            try:
                latencies = []
                for _ in range(40):
                    await stream.append([(0, big)] * 3)
                    started = time.perf_counter()
                    reply = await fast.request(PkgId.GET_AUTHORS, NOBODY)
                    latencies.append(time.perf_counter() - started)
                    assert reply["status_code"] == 0
            finally:
                await client.aclose()
            # The fast socket got every broadcast, and promptly.
            assert len(fast.broadcasts) == 120
            assert max(latencies) < 1.0, latencies
            # The server gave up on the slow socket only; its close waits for the client.
            closing = [s.principal.username for s in gateway.hub.sessions if s.closing]
            assert len(closing) == 1
            # Once the slow client reads again, it finds the close after what was sent.
            with contextlib.suppress(ConnectionClosed):
                async for _ in slow:
                    pass
            assert (slow.close_code, slow.close_reason) == (1008, "send queue full")


async def test_subscription_survives_a_redis_outage(
    serve_gateway: Any, issuer: Any, ws: Any, private_redis: Any
) -> None:
    stream = f"test:ws:outage:{uuid.uuid4().hex}"
    async with (
        serve_gateway(redis_url=private_redis.url, authors_stream=stream) as gateway,
        ws(gateway, issuer.token("viewer")) as client,
    ):
        await client.request(PkgId.SUBSCRIBE_AUTHORS)
        private_redis.stop()
        await asyncio.wait_for(gateway.hub.lost.wait(), 10)
        assert not gateway.context.author_cache.serving
        private_redis.start()
        await asyncio.wait_for(gateway.hub.listening.wait(), 15)
        publisher, changes = change_stream_of(private_redis.url, stream)
        try:
            await changes.append([(1, _event("after the outage"))])
        finally:
            await publisher.aclose()
        broadcast = await asyncio.wait_for(client.broadcast(), 5)
        assert (broadcast["pkg_id"], broadcast["data"]["name"]) == (101, "after the outage")


async def test_shutdown_closes_sockets_with_1001(serve_gateway: Any, issuer: Any, ws: Any) -> None:
    async with serve_gateway() as gateway, ws(gateway, issuer.token("viewer")) as client:
        gateway.server.should_exit = True
        assert await client.closed() == (1001, "server shutting down")
