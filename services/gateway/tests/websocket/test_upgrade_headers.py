"""Every answer to a /web upgrade carries the same security and request-id headers as HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
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


# Upgrade requests that uvicorn's HTTP parser takes but the WebSocket parser refuses.
REFUSED_UPGRADES = {
    "a header line over 8 KiB": f"Authorization: Bearer {'a' * 9000}\r\n",
    "more than 128 header fields": "".join(f"X-Filler-{i}: v\r\n" for i in range(130)),
}


async def _raw_upgrade(port: int, extra_headers: str) -> tuple[bytes, float]:
    """Send an upgrade request as bytes; everything answered until the gateway closes,
    and how long that took (5 s at most)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        "GET /web HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra_headers}\r\n"
    )
    started = time.monotonic()
    writer.write(request.encode())
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    return answer, time.monotonic() - started


@pytest.mark.parametrize("kind", REFUSED_UPGRADES)
async def test_an_upgrade_the_websocket_parser_refuses_gets_431_at_once(
    gateway: Any, issuer: Any, kind: str
) -> None:
    def refused() -> float:
        sample = {"status": "headers_too_large"}
        return REGISTRY.get_sample_value("ws_connections_total", sample) or 0.0

    before = refused()
    answer, seconds = await _raw_upgrade(gateway.port, REFUSED_UPGRADES[kind])
    assert seconds < 5
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    assert status_line == "HTTP/1.1 431 Request Header Fields Too Large"
    assert body == b"431 Request Header Fields Too Large"
    headers = Headers()
    for line in lines:
        name, _, value = line.partition(": ")
        headers[name] = value
    for name, value in SECURITY_HEADERS.items():
        assert headers.get_all(name) == [value], name
    assert headers["X-Request-ID"]
    assert headers["Connection"] == "close"
    assert refused() == before + 1
    # The gateway serves the next upgrade as ever.
    status, _ = await _upgrade(gateway.url, {"Authorization": f"Bearer {issuer.token('viewer')}"})
    assert status == 101


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
