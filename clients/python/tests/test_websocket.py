"""The WebSocket client against a small stand-in server of the `/web` protocol: answers,
errors, broadcasts, reconnects with a resync, token refresh and refusals."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from gatehouse_client.backoff import Backoff
from gatehouse_client.errors import Conflict, ConnectionLost, ServiceUnavailable
from gatehouse_client.websocket import (
    BROADCAST_REQ_ID,
    AuthorChange,
    GatehouseSocket,
    Resync,
    ws_url,
)

AUTHOR = {
    "id": 7,
    "name": "Ada",
    "created_at": "2026-12-01T10:00:00Z",
    "updated_at": "2026-12-01T10:00:00Z",
}


def jwt(exp: float) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).rstrip(b"=")
    return f"h.{payload.decode()}.s"


class Tokens:
    def __init__(self, lifetime: float = 300.0) -> None:
        self.lifetime = lifetime
        self.given: list[str] = []

    async def token(self) -> str:
        self.given.append(jwt(time.time() + self.lifetime + len(self.given)))
        return self.given[-1]

    def invalidate(self) -> None:
        """Each token() is a new token anyway."""


class Gateway:
    """Accepts sockets, answers `auth_ok`, echoes requests as answers, records frames."""

    def __init__(self) -> None:
        self.sockets: list[ServerConnection] = []
        self.frames: list[dict[str, Any]] = []
        self.close_on_connect: tuple[int, str] | None = None
        self.expires_in = 300.0
        self.drop_on_request = False
        # The change stream: (offset, pkg_id, name); offsets "1000-<n>".
        self.stream: list[tuple[str, int, str]] = []
        self.first_retained = 1
        self.recoverable: dict[ServerConnection, bool] = {}
        self.history_unavailable = 0

    async def handle(self, socket: ServerConnection) -> None:
        assert socket.request is not None
        assert socket.request.headers["Authorization"].startswith("Bearer h.")
        if self.close_on_connect is not None:
            await socket.close(*self.close_on_connect)
            return
        self.sockets.append(socket)
        await socket.send(
            json.dumps({"type": "auth_ok", "expires_at": time.time() + self.expires_in})
        )
        async for message in socket:
            frame = json.loads(message)
            self.frames.append(frame)
            if self.drop_on_request:
                await socket.close(1011, "internal error")
                return
            if frame.get("type") == "auth":
                await socket.send(json.dumps({"type": "auth_ok", "expires_at": time.time() + 300}))
                continue
            answer: dict[str, Any] = {
                "pkg_id": frame["pkg_id"],
                "req_id": frame["req_id"],
                "status_code": 0,
                "meta": None,
                "data": AUTHOR,
            }
            if frame["data"].get("name") == "taken":
                answer |= {
                    "status_code": 5,
                    "data": {"code": "conflict", "msg": "taken", "details": None},
                }
            if frame["pkg_id"] == 10:
                answer["data"] = await self.subscribe(socket, frame, answer)
                if answer["data"] is None:
                    continue
            if frame["pkg_id"] == 1:
                answer["data"] = [AUTHOR]
            if frame["pkg_id"] == 2:
                answer |= {"data": [AUTHOR], "meta": {"page": 1, "per_page": 1, "total": 1}}
            await socket.send(json.dumps(answer))

    async def broadcast(self, pkg_id: int, name: str) -> None:
        frame = {"pkg_id": pkg_id, "req_id": BROADCAST_REQ_ID, "data": AUTHOR | {"name": name}}
        await self.sockets[-1].send(json.dumps(frame))

    async def subscribe(
        self, socket: ServerConnection, frame: dict[str, Any], answer: dict[str, Any]
    ) -> dict[str, Any] | None:
        """docs/websocket.md, Recovery by offset, as far as the client needs it."""
        if "offset" not in frame["data"]:
            self.recoverable[socket] = False
            return {"subscribed": True}
        if self.history_unavailable:
            self.history_unavailable -= 1
            error = {"code": "service_unavailable", "msg": "redis", "details": None}
            await socket.send(json.dumps(answer | {"status_code": 7, "data": error}))
            return None
        self.recoverable[socket] = True
        head = f"1000-{len(self.stream)}"
        given = frame["data"]["offset"]
        if not given:
            return {"subscribed": True, "offset": head, "recovered": True}
        after = int(given.split("-")[1])
        if after < self.first_retained - 1:
            return {"subscribed": True, "offset": head, "recovered": False}
        await socket.send(
            json.dumps(answer | {"data": {"subscribed": True, "offset": given, "recovered": True}})
        )
        for offset, pkg_id, name in self.stream[after:]:
            await socket.send(json.dumps(self.event(offset, pkg_id, name)))
        return None

    @staticmethod
    def event(offset: str, pkg_id: int, name: str) -> dict[str, Any]:
        data = AUTHOR | {"name": name} if pkg_id != 103 else {"offset": offset}
        return {"pkg_id": pkg_id, "req_id": BROADCAST_REQ_ID, "offset": offset, "data": data}

    async def change(self, pkg_id: int, name: str, *, live: bool = True) -> str:
        """A change committed: into the stream, and to the open recoverable sockets."""
        offset = f"1000-{len(self.stream) + 1}"
        self.stream.append((offset, pkg_id, name))
        if live:
            for socket, recoverable in list(self.recoverable.items()):
                if recoverable and socket.state.name == "OPEN":
                    await socket.send(json.dumps(self.event(offset, pkg_id, name)))
        return offset


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Gateway, str]]:
    fake = Gateway()
    server: Server = await serve(fake.handle, "127.0.0.1", 0)
    port = next(iter(server.sockets)).getsockname()[1]
    async with server:
        yield fake, f"http://127.0.0.1:{port}"


def fast() -> Backoff:
    return Backoff(initial=0.01, maximum=0.05, rng=random.Random(1))


async def until(condition: Any, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def test_the_socket_url_follows_the_base_url() -> None:
    assert ws_url("http://h:8080/") == "ws://h:8080/web?format=json"
    assert ws_url("https://h") == "wss://h/web?format=json"


async def test_requests_get_their_answers_and_errors_raise(gateway: tuple[Gateway, str]) -> None:
    fake, url = gateway
    async with GatehouseSocket(url, Tokens(), backoff=fast()) as socket:
        assert socket.connected
        assert (await socket.get_author(7)).name == "Ada"
        assert (await socket.create_author("Ada")).id == 7
        assert (await socket.update_author(7, "Ada")).id == 7
        await socket.delete_author(7)
        assert [a.id for a in await socket.list_authors(search="A")] == [7]
        page = await socket.authors_page(page=1, per_page=1)
        assert page.meta.total == 1
        with pytest.raises(Conflict, match="taken"):
            await socket.create_author("taken")
    assert [f["pkg_id"] for f in fake.frames] == [6, 3, 4, 5, 1, 2, 3]


async def test_a_live_only_subscription_is_resubscribed_on_a_new_socket_after_a_resync(
    gateway: tuple[Gateway, str],
) -> None:
    fake, url = gateway
    async with GatehouseSocket(url, Tokens(), backoff=fast()) as socket:
        await socket.subscribe(recoverable=False)
        assert fake.frames[-1]["data"] == {}
        await fake.broadcast(100, "first")
        change = await socket.next_change(10)
        assert isinstance(change, AuthorChange)
        assert (change.kind, change.author.name) == ("created", "first")
        await fake.sockets[-1].close(1001, "server shutting down")
        assert isinstance(await socket.next_change(10), Resync)
        await until(lambda: len(fake.sockets) == 2 and socket.connected)
        await until(lambda: [f["pkg_id"] for f in fake.frames] == [10, 10])
        await fake.broadcast(102, "gone")
        deleted = await socket.next_change(10)
        assert isinstance(deleted, AuthorChange)
        assert deleted.kind == "deleted"
        assert socket.connections == 2
        await socket.drop()
        await until(lambda: socket.connections == 3 and socket.connected)
        await socket.unsubscribe()
        assert fake.frames[-1]["pkg_id"] == 11


async def test_a_request_in_flight_when_the_socket_drops_is_unavailable(
    gateway: tuple[Gateway, str],
) -> None:
    fake, url = gateway
    fake.drop_on_request = True
    async with GatehouseSocket(url, Tokens(), backoff=fast()) as socket:
        with pytest.raises(ServiceUnavailable):
            await socket.get_author(7)


async def test_a_token_is_renewed_on_the_open_socket_before_it_expires(
    gateway: tuple[Gateway, str],
) -> None:
    fake, url = gateway
    fake.expires_in = 61.0  # the refresh is due 60 s before expiry: at once
    async with GatehouseSocket(url, Tokens(), backoff=fast()):
        await until(lambda: any(f.get("type") == "auth" for f in fake.frames))
    auth = next(f for f in fake.frames if f.get("type") == "auth")
    assert auth["token"].startswith("Bearer h.")


async def test_authentication_refused_twice_ends_the_client(
    gateway: tuple[Gateway, str],
) -> None:
    fake, url = gateway
    fake.close_on_connect = (4001, "invalid token")
    socket = GatehouseSocket(url, Tokens(), backoff=fast())
    with pytest.raises(ConnectionLost, match="invalid token") as lost:
        await socket.connect()
    assert lost.value.close_code == 4001
    with pytest.raises(ConnectionLost):
        async for _ in socket.changes():
            pass
    await socket.aclose()


async def test_a_refused_upgrade_ends_the_client() -> None:
    async def refuse(connection: ServerConnection, request: Any) -> Any:
        return connection.respond(403, "origin not allowed\n")

    server = await serve(lambda s: asyncio.sleep(0), "127.0.0.1", 0, process_request=refuse)
    port = next(iter(server.sockets)).getsockname()[1]
    async with server:
        socket = GatehouseSocket(f"http://127.0.0.1:{port}", Tokens(), backoff=fast())
        with pytest.raises(ConnectionLost, match="403"):
            await socket.connect()
        await socket.aclose()


async def names(socket: GatehouseSocket, count: int) -> list[str]:
    got = []
    for _ in range(count):
        change = await socket.next_change(10)
        assert isinstance(change, AuthorChange), change
        got.append(change.author.name)
    return got


async def test_a_new_socket_recovers_what_was_missed_in_order(
    gateway: tuple[Gateway, str],
) -> None:
    fake, url = gateway
    async with GatehouseSocket(url, Tokens(), backoff=fast()) as socket:
        await socket.subscribe()
        assert fake.frames[-1]["data"] == {"offset": ""}
        await fake.change(100, "one")
        assert await names(socket, 1) == ["one"]
        assert socket.offset == "1000-1"
        fake.drop_on_request = False
        await fake.sockets[-1].close(1001, "server shutting down")
        # Committed while no socket is open: only the stream has them.
        for name in ("two", "three", "four"):
            await fake.change(101, name, live=False)
        assert await names(socket, 3) == ["two", "three", "four"]
        assert fake.frames[-1]["data"] == {"offset": "1000-1"}
        await fake.change(102, "five")
        change = await socket.next_change(10)
        assert isinstance(change, AuthorChange)
        assert (change.kind, change.author.name, change.offset) == ("deleted", "five", "1000-5")
        assert socket._changes.empty()


async def test_an_offset_past_the_history_is_a_gap_told_as_a_resync(
    gateway: tuple[Gateway, str],
) -> None:
    fake, url = gateway
    async with GatehouseSocket(url, Tokens(), backoff=fast()) as socket:
        await socket.subscribe()
        await fake.change(100, "one")
        assert await names(socket, 1) == ["one"]
        await fake.sockets[-1].close(1001, "server shutting down")
        for name in ("two", "three"):
            await fake.change(101, name, live=False)
        fake.first_retained = 3  # "two" was trimmed away
        resync = await socket.next_change(10)
        assert isinstance(resync, Resync)
        assert "history gap" in resync.reason
        assert socket.offset == "1000-3"
        await fake.change(100, "four")
        assert await names(socket, 1) == ["four"]


async def test_a_gap_broadcast_is_a_resync_and_a_repeated_offset_is_dropped(
    gateway: tuple[Gateway, str],
) -> None:
    fake, url = gateway
    async with GatehouseSocket(url, Tokens(), backoff=fast()) as socket:
        await socket.subscribe()
        offset = await fake.change(100, "one")
        await fake.sockets[-1].send(json.dumps(fake.event(offset, 100, "one")))
        await fake.change(103, "")
        await fake.change(100, "two")
        assert await names(socket, 1) == ["one"]
        gap = await socket.next_change(10)
        assert isinstance(gap, Resync)
        assert await names(socket, 1) == ["two"]


async def test_another_process_resumes_from_a_kept_offset(gateway: tuple[Gateway, str]) -> None:
    fake, url = gateway
    for name in ("one", "two", "three"):
        await fake.change(100, name, live=False)
    async with GatehouseSocket(url, Tokens(), backoff=fast()) as socket:
        await socket.subscribe(offset="1000-1")
        assert await names(socket, 2) == ["two", "three"]


async def test_history_that_cannot_be_read_now_is_asked_again_on_a_new_socket(
    gateway: tuple[Gateway, str],
) -> None:
    fake, url = gateway
    async with GatehouseSocket(url, Tokens(), backoff=fast()) as socket:
        await socket.subscribe()
        await fake.change(100, "one")
        assert await names(socket, 1) == ["one"]
        fake.history_unavailable = 2
        await fake.sockets[-1].close(1001, "server shutting down")
        await fake.change(100, "two", live=False)
        assert await names(socket, 1) == ["two"]
        assert socket.connections == 4


async def test_a_request_while_no_socket_can_be_opened_is_unavailable_in_time(
    gateway: tuple[Gateway, str],
) -> None:
    fake, url = gateway
    async with GatehouseSocket(
        url,
        Tokens(),
        backoff=Backoff(initial=30, maximum=30, rng=random.Random(3)),
        request_timeout=0.5,
    ) as socket:
        await fake.sockets[-1].close(1001, "server shutting down")
        await until(lambda: not socket.connected)
        with pytest.raises(ServiceUnavailable, match="in time"):
            await socket.get_author(7)


async def test_closing_the_client_ends_the_readers_of_its_changes(
    gateway: tuple[Gateway, str],
) -> None:
    fake, url = gateway
    socket = GatehouseSocket(url, Tokens(), backoff=fast())
    await socket.connect()
    await socket.subscribe()
    await fake.change(100, "one")
    seen: list[str] = []

    async def read() -> None:
        async for change in socket.changes():
            assert isinstance(change, AuthorChange)
            seen.append(change.author.name)

    reader = asyncio.create_task(read())
    await until(lambda: seen == ["one"])
    await socket.aclose()
    await asyncio.wait_for(reader, 10)
    with pytest.raises(ConnectionLost, match="closed"):
        await socket.next_change(1)
