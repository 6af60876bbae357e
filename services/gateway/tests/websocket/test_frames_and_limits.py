"""Malformed frames, roles per pkg_id, and the limits that close or refuse."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode

from gatehouse_gateway.websocket.endpoint import MALFORMED_LIMIT
from gatehouse_gateway.websocket.protocol import PkgId

NOBODY = {"name": "no author has this name"}
REQ_ID = "7f1c7a52-3f4e-4f0e-9a55-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    ("frame", "req_id", "msg"),
    [
        ("{not json", None, "frame is not valid JSON"),
        ("[1, 2]", None, "frame must be a JSON object"),
        (json.dumps({"pkg_id": 99, "req_id": REQ_ID, "data": {}}), REQ_ID, "unknown pkg_id"),
        (json.dumps({"pkg_id": 1, "req_id": "abc", "data": {}}), "abc", "req_id must be a UUID"),
        (
            json.dumps({"pkg_id": 1, "req_id": REQ_ID, "data": [1]}),
            REQ_ID,
            "data must be an object",
        ),
        (b"\x00\x01binary", None, "format=json expects text frames"),
        (
            json.dumps({"type": "subscribe", "pkg_id": 10, "req_id": REQ_ID}),
            REQ_ID,
            "unknown frame type",
        ),
    ],
    ids=[
        "bad-json",
        "not-object",
        "unknown-pkg",
        "bad-req-id",
        "data-not-object",
        "binary",
        "unknown-type",
    ],
)
async def test_malformed_frame_gets_invalid_data_and_socket_stays_open(
    gateway: Any, issuer: Any, ws: Any, frame: str | bytes, req_id: str | None, msg: str
) -> None:
    async with ws(gateway, issuer.token("viewer")) as client:
        await client.send_raw(frame)
        reply = await client.frame()
        assert reply["status_code"] == 2
        assert reply["req_id"] == req_id
        assert reply["data"] == {"code": "invalid_data", "msg": msg, "details": None}
        assert (await client.request(PkgId.GET_AUTHORS, NOBODY))["status_code"] == 0


async def test_schema_violation_names_the_field(gateway: Any, issuer: Any, ws: Any) -> None:
    async with ws(gateway, issuer.token("editor"), fmt="protobuf") as client:
        reply = await client.request(PkgId.GET_AUTHOR, {"id": "seven", "extra": 1})
        assert reply["status_code"] == 2
        fields = {d["field"] for d in reply["data"]["details"]}
        assert fields == {"id", "extra"}


async def test_garbage_protobuf_gets_invalid_data(gateway: Any, issuer: Any, ws: Any) -> None:
    async with ws(gateway, issuer.token("viewer"), fmt="protobuf") as client:
        await client.send_raw(b"\xff\xff\xff")
        reply = await client.frame()
        # protobuf has no null: an unreadable req_id comes back empty.
        assert (reply["status_code"], reply["req_id"]) == (2, "")
        assert (await client.request(PkgId.GET_AUTHORS, NOBODY))["status_code"] == 0


async def test_repeated_malformed_frames_close_1008(gateway: Any, issuer: Any, ws: Any) -> None:
    async with ws(gateway, issuer.token("viewer")) as client:
        for _ in range(MALFORMED_LIMIT + 1):
            await client.send_raw("{not json")
        assert await client.closed() == (1008, "too many malformed frames")


async def test_oversized_frame_closes_1009(gateway: Any, issuer: Any, ws: Any) -> None:
    limit = gateway.context.settings.ws_max_frame_bytes
    async with ws(gateway, issuer.token("editor")) as client:
        await client.send_raw(client.encode(3, {"name": "x" * (limit + 1)}, REQ_ID))
        code, _ = await client.closed()
        assert code == 1009


async def _frames_until_eof(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """(opcode, payload) of every frame the server sends until it ends its side."""
    data, frames = await reader.read(), []
    while data:
        length, offset = data[1] & 0x7F, 2
        if length == 126:
            length, offset = int.from_bytes(data[2:4]), 4
        frames.append((data[0] & 0x0F, data[offset : offset + length]))
        data = data[offset + length :]
    return frames


async def test_a_frame_far_over_the_limit_still_gets_its_close_1009(
    gateway: Any, issuer: Any
) -> None:
    # Most of such a frame is still unread when the server refuses it by its header; a
    # socket closed at once over unread data answers with a reset, which destroys the
    # close frame before the client (or a proxy in between) reads it. A raw client, so
    # that what the server sent is read whatever a client library would make of it.
    limit = gateway.context.settings.ws_max_frame_bytes
    upgrade = (
        f"GET /web HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {issuer.token('editor')}\r\n\r\n"
    ).encode()
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(upgrade)
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        writer.write(Frame(Opcode.TEXT, b"x" * (limit * 64)).serialize(mask=True))
        await writer.drain()
        frames = await _frames_until_eof(reader)
        writer.close()
        assert frames[-1][0] == Opcode.CLOSE, frames
        assert int.from_bytes(frames[-1][1][:2]) == 1009


ALLOWED: dict[str, set[int]] = {
    "admin": {int(p) for p in PkgId} - {100, 101, 102},
    "editor": {int(p) for p in PkgId} - {100, 101, 102},
    "viewer": {1, 2, 6, 10, 11},
    "nobody": set(),
}


@pytest.mark.parametrize("role_set", ["viewer", "nobody", "editor", "admin"])
async def test_roles_per_pkg_id(gateway: Any, issuer: Any, ws: Any, role_set: str) -> None:
    async with ws(gateway, issuer.token("editor")) as setup:
        author = (await setup.request(PkgId.CREATE_AUTHOR, {"name": uuid.uuid4().hex}))["data"]
    requests = {
        PkgId.GET_AUTHORS: NOBODY,
        PkgId.GET_PAGINATED_AUTHORS: NOBODY,
        PkgId.CREATE_AUTHOR: {"name": uuid.uuid4().hex},
        PkgId.GET_AUTHOR: {"id": author["id"]},
        PkgId.UPDATE_AUTHOR: {"id": author["id"], "name": uuid.uuid4().hex},
        PkgId.SUBSCRIBE_AUTHORS: {},
        PkgId.UNSUBSCRIBE_AUTHORS: {},
        PkgId.DELETE_AUTHOR: {"id": author["id"]},
    }
    async with ws(gateway, issuer.token(role_set)) as client:
        for pkg_id, data in requests.items():
            reply = await client.request(pkg_id, data)
            if pkg_id in ALLOWED[role_set]:
                assert reply["status_code"] == 0, (pkg_id, reply)
            else:
                assert reply["status_code"] == 3, (pkg_id, reply)
                assert reply["data"]["code"] == "permission_denied"


async def test_every_handled_message_is_audited(gateway: Any, issuer: Any, ws: Any) -> None:
    audit = gateway.context.audit
    async with ws(gateway, issuer.token("nobody")) as client:
        before = audit.held
        await client.request(PkgId.GET_AUTHORS, NOBODY)
        await client.send_raw("{not json")
        await client.frame()
        assert audit.held == before + 2
        held = list(audit._buffer)[-2:]
    assert [(e.action_type, e.outcome, e.response_status) for e in held] == [
        ("WS:GET_AUTHORS", 3, 3),
        ("WS:INVALID_FRAME", 2, 2),
    ]
    assert held[0].username.startswith("nobody-")


async def test_message_rate_limit_answers_rate_limited(
    gateway: Any, issuer: Any, ws: Any, limits: dict[str, int]
) -> None:
    async with ws(gateway, issuer.token("viewer")) as client:
        for _ in range(limits["messages_per_minute"]):
            assert (await client.request(PkgId.GET_AUTHORS, NOBODY))["status_code"] == 0
        refused = await client.request(PkgId.GET_AUTHORS, NOBODY)
        assert refused["status_code"] == 6
        assert refused["data"]["code"] == "rate_limit_exceeded"
        assert refused["data"]["details"]["retry_after"] >= 1
        # Refused, not closed: the socket still answers other frames.
        await client.send_raw("{not json")
        assert (await client.frame())["status_code"] == 2


async def test_concurrent_sockets_per_user_are_limited(
    gateway: Any, issuer: Any, ws: Any, limits: dict[str, int]
) -> None:
    user = str(uuid.uuid4())
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(limits["connections_per_user"]):
            await stack.enter_async_context(ws(gateway, issuer.token("viewer", user=user)))
        headers = {"Authorization": f"Bearer {issuer.token('viewer', user=user)}"}
        async with connect(gateway.url, additional_headers=headers) as extra:
            with contextlib.suppress(ConnectionClosed):
                await extra.recv()
            assert (extra.close_code, extra.close_reason) == (1008, "too many connections")
    # Closing the others released their leases.
    async with ws(gateway, issuer.token("viewer", user=user)) as again:
        assert (await again.request(PkgId.GET_AUTHORS, NOBODY))["status_code"] == 0


async def test_process_capacity_refuses_the_socket_beyond_it(
    serve_gateway: Any, issuer: Any, ws: Any
) -> None:
    async with serve_gateway(ws_max_connections=1) as small:
        assert REGISTRY.get_sample_value("ws_connections_limit") == 1
        async with ws(small, issuer.token("viewer")) as first:
            headers = {"Authorization": f"Bearer {issuer.token('editor')}"}
            with pytest.raises(InvalidStatus) as refused:
                async with connect(small.url, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 503
            body = json.loads(refused.value.response.body)
            assert body["error"] == {
                "code": "service_unavailable",
                "msg": "connection capacity reached",
                "details": None,
            }
            assert (await first.request(PkgId.GET_AUTHORS, NOBODY))["status_code"] == 0
        # The first socket's departure frees its place.
        async with asyncio.timeout(5):
            while small.hub.sessions:  # noqa: ASYNC110  (the hub exposes no event)
                await asyncio.sleep(0.01)
        async with ws(small, issuer.token("editor")) as second:
            assert (await second.request(PkgId.GET_AUTHORS, NOBODY))["status_code"] == 0
