"""Hostile input through Traefik :8080: deep bodies and frames, out-of-range integers and
bodies of anonymous clients. Each gets its documented answer (docs/api.md, Request
bodies; docs/websocket.md, Malformed frames); nothing escapes into the gateway's server,
so the connection Traefik pools to a replica, and the next client's request on it, stay
healthy, and sockets go on answering."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from gatehouse_gateway.client_json import MAX_DEPTH
from gatehouse_protos.websocket import websocket_pb2
from tests.e2e.conftest import Tokens, client_address
from tests.e2e.ws import ANSWER_WITHIN_SECONDS, GET_AUTHOR, GET_AUTHORS, ws_url
from tests.harness.stack import Stack

# What uvicorn logs when an exception leaves the application (and it drops the connection).
ESCAPED = "Exception in ASGI application"
# Between the gateway's body limit (1 MiB) and Traefik's outer bound (2 MiB): the gateway
# is the one to answer.
OVER_THE_GATEWAY_LIMIT = 1024 * 1024 + 1
DEEP_ARRAYS = "[" * 1000 + "]" * 1000
DEEP_OBJECTS = '{"a": ' * 1000 + "1" + "}" * 1000
JSON = {"Content-Type": "application/json"}


class GatewayLogs:
    """What every gateway replica of the native stack logged since this was made."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._offsets: dict[str, int] = {}
        for k in range(stack.replicas("gateway")):
            path = stack.log_path(f"gateway-{k}")
            self._offsets[f"gateway-{k}"] = path.stat().st_size if path.exists() else 0

    def since(self) -> str:
        text = []
        for program, offset in self._offsets.items():
            with self._stack.log_path(program).open("rb") as log:
                size = log.seek(0, 2)
                # A log rotated meanwhile starts again from zero.
                log.seek(offset if offset <= size else 0)
                text.append(log.read().decode("utf-8", "replace"))
        return "".join(text)

    def assert_nothing_escaped(self) -> None:
        assert ESCAPED not in self.since()


@pytest.fixture
def gateway_logs(native_stack: Stack) -> GatewayLogs:
    """The gateway replicas' logs from the start of the test on (their files: native only)."""
    return GatewayLogs(native_stack)


@pytest.mark.parametrize("body", [DEEP_ARRAYS, DEEP_OBJECTS], ids=["arrays", "objects"])
async def test_deep_bodies_get_400_and_the_next_requests_are_served(
    web: httpx.AsyncClient,
    tokens: Tokens,
    author: dict[str, Any],
    gateway_logs: GatewayLogs,
    body: str,
) -> None:
    headers = {**JSON, **await tokens.headers("admin")}
    deep = '{"name": ' + body + "}"
    for _ in range(5):
        for method, path in (("POST", "/authors"), ("PUT", f"/authors/{author['id']}")):
            refused = await web.request(method, path, content=deep, headers=headers)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"] == {
                "code": "invalid_data",
                "msg": f"request body is nested deeper than {MAX_DEPTH} levels",
                "details": None,
            }
            # The ordinary request right after, on the connection Traefik just used.
            fetched = await web.get(f"/authors/{author['id']}", headers=headers)
            assert fetched.status_code == 200, fetched.text
    gateway_logs.assert_nothing_escaped()


@pytest.mark.parametrize(
    "body",
    [b"{not json", ('{"name": ' + DEEP_ARRAYS + "}").encode(), b"{" * OVER_THE_GATEWAY_LIMIT],
    ids=["malformed", "deep", "oversized"],
)
@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["no-token", "bad-token"])
async def test_an_anonymous_body_gets_401_unread_and_the_next_request_is_served(
    web: httpx.AsyncClient, tokens: Tokens, body: bytes, token: str | None
) -> None:
    headers = dict(JSON)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = await web.post("/authors", content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "authentication_failed"
    assert response.headers["www-authenticate"].startswith("Bearer")
    # The body left unread is skipped, not taken for the next request on the connection.
    listed = await web.get(
        "/authors", params={"name": "no such author"}, headers=await tokens.headers("viewer")
    )
    assert listed.status_code == 200, listed.text


# Raw bytes above 0x7F in a request target: Traefik forwards them as they came, and the
# gateway's HTTP parser refuses them.
RAW_TARGETS = [
    b"/health?resource=\xf4\x90\x80\x80\xf7\xd3[o\x85\xed\xa0\x80",
    b"/authors?name=\xff\xfe",
]
# A body larger than the sockets' buffers, still unread when the parser refuses the target.
UNREAD_BODY = b"x" * (300 * 1024)


async def _raw_exchange(stack: Stack, raw: bytes) -> bytes:
    """Send `raw` on a connection of its own to :8080: the answer's head."""
    url = urlsplit(stack.web_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(raw)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_WITHIN_SECONDS)
    finally:
        writer.close()


@pytest.mark.parametrize("target", RAW_TARGETS, ids=["health", "api"])
async def test_raw_high_bytes_in_the_target_get_400_never_a_502(
    stack: Stack, web: httpx.AsyncClient, tokens: Tokens, target: bytes
) -> None:
    raw = (
        b"POST " + target + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"X-Forwarded-For: " + client_address().encode() + b"\r\n"
        b"Content-Length: " + str(len(UNREAD_BODY)).encode() + b"\r\n\r\n" + UNREAD_BODY
    )
    # The gateway's refusal used to race its own reset: some answers were Traefik's 502.
    heads = [await _raw_exchange(stack, raw) for _ in range(20)]
    statuses = [int(head.split(b" ", 2)[1]) for head in heads]
    assert statuses == [400] * len(heads), statuses
    assert all(b"x-content-type-options: nosniff" in head.lower() for head in heads)
    listed = await web.get(
        "/authors", params={"name": "no such author"}, headers=await tokens.headers("viewer")
    )
    assert listed.status_code == 200, listed.text


async def _socket(stack: Stack, token: str, fmt: str) -> ClientConnection:
    socket = await websockets.connect(
        f"{ws_url(stack.web_url)}?format={fmt}",
        additional_headers={
            "Authorization": f"Bearer {token}",
            "X-Forwarded-For": client_address(),
        },
        open_timeout=ANSWER_WITHIN_SECONDS,
        max_size=None,
    )
    hello = json.loads(await asyncio.wait_for(socket.recv(), ANSWER_WITHIN_SECONDS))
    assert hello["type"] == "auth_ok", hello
    return socket


async def _answer(socket: ClientConnection, fmt: str) -> dict[str, Any]:
    """The next response frame, as JSON would give it."""
    while True:
        raw = await asyncio.wait_for(socket.recv(), ANSWER_WITHIN_SECONDS)
        if fmt == "json":
            frame: dict[str, Any] = json.loads(raw)
        else:
            assert isinstance(raw, bytes), raw
            response = websocket_pb2.Response.FromString(raw)
            frame = {
                "req_id": response.req_id,
                "status_code": response.status_code,
                "data": json.loads(response.data_json),
            }
        if frame.get("req_id") != "00000000-0000-0000-0000-000000000000":
            return frame


def _frame(fmt: str, pkg_id: int, req_id: str, data_json: str) -> str | bytes:
    if fmt == "json":
        return f'{{"pkg_id": {pkg_id}, "req_id": "{req_id}", "data": {data_json}}}'
    return websocket_pb2.Request(
        pkg_id=pkg_id, req_id=req_id, data_json=data_json
    ).SerializeToString()


async def _still_answers(socket: ClientConnection, fmt: str) -> None:
    pong = await socket.ping()
    await asyncio.wait_for(pong, ANSWER_WITHIN_SECONDS)
    req_id = str(uuid.uuid4())
    await socket.send(_frame(fmt, GET_AUTHORS, req_id, '{"name": "no such author"}'))
    answer = await _answer(socket, fmt)
    assert (answer["req_id"], answer["status_code"]) == (req_id, 0), answer


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
async def test_deep_and_out_of_range_frames_get_invalid_data_and_the_socket_answers(
    stack: Stack, tokens: Tokens, gateway_logs: GatewayLogs, fmt: str
) -> None:
    deep = [DEEP_ARRAYS, DEEP_OBJECTS, '{"id": ' + DEEP_ARRAYS + "}"]
    out_of_range = [f'{{"id": {2**70}}}', f'{{"id": {-(2**70)}}}', '{"id": 7.0}', '{"id": 1e30}']
    socket = await _socket(stack, await tokens.get("viewer"), fmt)
    try:
        for data_json in deep + out_of_range:
            req_id = str(uuid.uuid4())
            await socket.send(_frame(fmt, GET_AUTHOR, req_id, data_json))
            answer = await _answer(socket, fmt)
            assert answer["status_code"] == 2, (data_json[:40], answer)
            # A JSON frame too deep to parse has no readable req_id; protobuf carries it.
            if fmt == "protobuf" or data_json in out_of_range:
                assert answer["req_id"] == req_id
            await _still_answers(socket, fmt)
        if fmt == "json":
            await socket.send(DEEP_ARRAYS)
        else:
            await socket.send(b"\x0b" * 10_000)
        assert (await _answer(socket, fmt))["status_code"] == 2
        await _still_answers(socket, fmt)
    finally:
        await socket.close()
    gateway_logs.assert_nothing_escaped()
