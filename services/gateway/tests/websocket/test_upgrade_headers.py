"""Every answer to a /web upgrade carries the same security and request-id headers as HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus

# The headers docs/api.md asks of every response, as the edge sets them on HTTP answers.
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
# query string, extra headers, expected status
UPGRADES = {
    "accepted": ("", {}, 101),
    "bad format": ("?format=xml", {}, 400),
    "foreign origin": ("", {"Origin": "https://evil.example"}, 403),
}


async def _upgrade(url: str, headers: dict[str, str]) -> tuple[int, Headers]:
    try:
        async with connect(url, additional_headers=headers, open_timeout=5) as connection:
            assert connection.response is not None
            return connection.response.status_code, connection.response.headers
    except InvalidStatus as refused:
        return refused.response.status_code, refused.response.headers


def _assert_edge_headers(headers: Headers, request_id: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get_all(name) == [value], name
    assert headers.get_all("X-Request-ID") == [request_id]


@pytest.mark.parametrize("kind", UPGRADES)
async def test_upgrade_answers_carry_the_edge_headers(gateway: Any, issuer: Any, kind: str) -> None:
    query, extra, expected = UPGRADES[kind]
    headers = {
        "Authorization": f"Bearer {issuer.token('viewer')}",
        "X-Request-ID": f"upgrade-{kind.replace(' ', '-')}",
        **extra,
    }
    status, answer = await _upgrade(gateway.url + query, headers)
    assert status == expected
    _assert_edge_headers(answer, headers["X-Request-ID"])


async def test_upgrade_without_a_request_id_gets_a_fresh_one(gateway: Any) -> None:
    _, first = await _upgrade(gateway.url, {})
    _, second = await _upgrade(gateway.url, {})
    assert first["X-Request-ID"]
    assert second["X-Request-ID"]
    assert first["X-Request-ID"] != second["X-Request-ID"]


async def test_http_and_upgrade_answers_share_their_security_headers(gateway: Any) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}") as client:
        http = await client.get("/health/live", headers={"X-Request-ID": "same-headers"})
    _, upgrade = await _upgrade(gateway.url, {"X-Request-ID": "same-headers"})
    for name in SECURITY_HEADERS:
        assert http.headers[name] == upgrade[name], name


async def test_upgrade_declines_per_message_compression(gateway: Any, issuer: Any) -> None:
    """Browsers offer permessage-deflate; a zlib state per socket would double an idle
    socket's memory for little gain on small frames, so the gateway declines it."""
    headers = {"Authorization": f"Bearer {issuer.token('viewer')}"}
    async with connect(gateway.url, additional_headers=headers, open_timeout=5) as connection:
        assert connection.request is not None
        assert connection.response is not None
        assert "permessage-deflate" in connection.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in connection.response.headers
        assert connection.protocol.extensions == []
