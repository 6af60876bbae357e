"""Authentication on /web: header or first frame, refusals, expiry and refresh."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from gatehouse_gateway.websocket.protocol import PkgId

# A filter that matches no author: the answer is an empty list.
NOBODY = {"name": "no author has this name"}


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
@pytest.mark.parametrize("header", [True, False], ids=["header", "first-frame"])
async def test_header_or_first_frame_authenticates(
    gateway: Any, issuer: Any, ws: Any, fmt: str, header: bool
) -> None:
    async with ws(gateway, issuer.token("viewer"), fmt=fmt, header=header) as client:
        reply = await client.request(PkgId.GET_AUTHORS, NOBODY)
        assert (reply["status_code"], reply["data"]) == (0, [])


async def test_an_authenticated_socket_keeps_no_copy_of_its_header_token(
    gateway: Any, issuer: Any, ws: Any
) -> None:
    user = "5b0c2f4e-0000-4000-8000-00000000f00d"
    token = issuer.token("viewer", user=user)
    async with ws(gateway, token, header=True) as client:
        reply = await client.request(PkgId.GET_AUTHORS, NOBODY)
        assert reply["status_code"] == 0
        session = next(s for s in gateway.hub.sessions if s.principal.user_id == user)
        scope_headers = session.websocket.scope["headers"]
        assert scope_headers, "the other upgrade headers stay"
        assert all(name != b"authorization" for name, _ in scope_headers)
        assert token.encode() not in b"".join(value for _, value in scope_headers)
        assert session.websocket.headers.get("authorization") is None


async def _closed_with(gateway: Any, *frames: str, headers: dict[str, str] | None = None) -> Any:
    async with connect(gateway.url, additional_headers=headers or {}) as connection:
        for frame in frames:
            await connection.send(frame)
        with contextlib.suppress(ConnectionClosed):
            async for _ in connection:
                pass
        return connection.close_code, connection.close_reason


async def test_bad_token_in_header_closes_4001(gateway: Any) -> None:
    code, reason = await _closed_with(gateway, headers={"Authorization": "Bearer not.a.jwt"})
    assert (code, reason) == (4001, "malformed token")


async def test_bad_token_in_frame_closes_4001(gateway: Any, issuer: Any) -> None:
    forged = issuer.token("editor")[:-4] + "AAAA"
    code, reason = await _closed_with(
        gateway, json.dumps({"type": "auth", "token": f"Bearer {forged}"})
    )
    assert (code, reason) == (4001, "invalid token")


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        json.dumps({"type": "auth"}),
        json.dumps({"type": "auth", "token": "Basic abc"}),
        json.dumps({"pkg_id": 1, "req_id": "00000000-0000-0000-0000-000000000001"}),
    ],
    ids=["not-json", "no-token", "not-bearer", "request-before-auth"],
)
async def test_malformed_auth_frame_closes_4001(gateway: Any, frame: str) -> None:
    assert await _closed_with(gateway, frame) == (4001, "malformed auth frame")


async def test_expired_token_is_refused(gateway: Any, issuer: Any) -> None:
    expired = issuer.token("editor", lifetime=-60)
    code, reason = await _closed_with(gateway, headers={"Authorization": f"Bearer {expired}"})
    assert (code, reason) == (4001, "token expired")


async def test_token_in_query_string_is_refused(gateway: Any, issuer: Any) -> None:
    url = f"{gateway.url}?token={issuer.token('editor')}"
    async with connect(url) as connection:
        with pytest.raises(ConnectionClosed):
            await connection.recv()
        assert connection.close_code == 4001
        assert connection.close_reason == "tokens in the query string are refused"


async def test_silence_closes_4002(serve_gateway: Any) -> None:
    async with serve_gateway(ws_auth_timeout_seconds=0.3) as gateway:
        assert await _closed_with(gateway) == (4002, "authentication timeout")


async def test_socket_closes_at_token_expiry(gateway: Any, issuer: Any, ws: Any) -> None:
    async with ws(gateway, issuer.token("viewer", lifetime=1.5)) as client:
        reply = await client.request(PkgId.GET_AUTHORS, NOBODY)
        assert reply["status_code"] == 0
        assert await client.closed() == (4001, "token expired")


async def test_refresh_keeps_the_socket_open(gateway: Any, issuer: Any, ws: Any) -> None:
    user = "5b0c2f4e-0000-4000-8000-00000000beef"
    short = issuer.token("viewer", user=user, lifetime=1.5)
    async with ws(gateway, short) as client:
        fresh = issuer.token("viewer", user=user, lifetime=300)
        await client.send_raw(json.dumps({"type": "auth", "token": f"Bearer {fresh}"}))
        ok = await client.frame()
        assert ok["type"] == "auth_ok"
        # Outlive the first token: the socket must still answer.
        session = next(s for s in gateway.hub.sessions if s.principal.user_id == user)
        assert session.principal.expires_at > time.time() + 200
        reply = await client.request(PkgId.GET_AUTHORS, NOBODY)
        assert reply["status_code"] == 0


async def test_refresh_with_another_users_token_closes_4001(
    gateway: Any, issuer: Any, ws: Any
) -> None:
    async with ws(gateway, issuer.token("viewer")) as client:
        other = issuer.token("viewer")
        await client.send_raw(json.dumps({"type": "auth", "token": f"Bearer {other}"}))
        assert await client.closed() == (4001, "token belongs to another user")


async def test_origin_outside_the_allow_list_is_refused(gateway: Any, issuer: Any) -> None:
    headers = {"Authorization": f"Bearer {issuer.token('viewer')}"}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            gateway.url, additional_headers=headers, origin=Origin("http://evil.test")
        ):
            pass
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"]["code"] == "permission_denied"


async def test_allowed_origin_connects(gateway: Any, issuer: Any, ws: Any) -> None:
    async with ws(gateway, issuer.token("viewer"), origin="http://app.gatehouse.test") as client:
        assert (await client.request(PkgId.GET_AUTHORS, NOBODY))["status_code"] == 0
