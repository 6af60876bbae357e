"""Request headers over the edge's limit get 431 at once on every route class, through both
public entrypoints (docs/api.md, Headers; docs/websocket.md, Connecting); requests below
it are served as ever, and the next request on a new connection is served.

Requests go as raw bytes over a socket of their own (HTTP/1.1, `Connection: close`), so
that nothing between the test and Traefik trims, splits or retries them.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import Tokens, client_address
from tests.harness.stack import Stack

# An answer this late counts as none: the client would be left waiting.
PROMPT_SECONDS = 5.0
# Request line and headers the edge accepts (docs/api.md, Headers).
LIMIT_BYTES = 8192
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
KEYCLOAK = "Keycloak realm"
# route class: path, headers of its kind, status of an ordinary request
ROUTES = {
    "public API": ("/authors?id=1", {}, 200),
    "WebSocket upgrade": ("/web", UPGRADE, 101),
    KEYCLOAK: ("/auth/realms/gatehouse/.well-known/openid-configuration", {}, 200),
    "health": ("/health/live", {}, 200),
}
ENTRYPOINTS = ("web", "websecure")


def request(route: str, headers: dict[str, str]) -> bytes:
    """`route`'s request with `headers` (and those of its kind), as bytes."""
    path, kind, _ = ROUTES[route]
    every = {"Host": "localhost", **kind, **headers}
    if route != KEYCLOAK:
        # A client address of its own for the gateway's rate limits. Keycloak refuses a
        # foreign address over plain HTTP (HTTPS required), and limits nothing here.
        every["X-Forwarded-For"] = client_address()
    if "Connection" not in every:
        every["Connection"] = "close"
    lines = [f"GET {path} HTTP/1.1", *(f"{name}: {value}" for name, value in every.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def padded(route: str, headers: dict[str, str], size: int) -> bytes:
    """`route`'s request with `headers` and an `X-Pad` header making it exactly `size` bytes."""
    base = request(route, {**headers, "X-Pad": ""})
    filler = size - len(base)
    assert filler >= 0
    return base.replace(b"X-Pad: \r\n", b"X-Pad: " + b"p" * filler + b"\r\n")


async def exchange(stack: Stack, entrypoint: str, raw: bytes) -> tuple[int, float]:
    """Send `raw` on a new connection to `entrypoint`: the answer's status and how many
    seconds it took (PROMPT_SECONDS at most)."""
    url = urlsplit(stack.web_url if entrypoint == "web" else stack.https_url)
    tls = stack.tls_context() if entrypoint == "websecure" else None
    reader, writer = await asyncio.open_connection(url.hostname, url.port, ssl=tls)
    started = time.monotonic()
    try:
        writer.write(raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=PROMPT_SECONDS)
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]), time.monotonic() - started


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
@pytest.mark.parametrize("route", ROUTES)
async def test_a_12_kib_authorization_header_gets_431_at_once(
    stack: Stack, tokens: Tokens, entrypoint: str, route: str
) -> None:
    oversized = request(route, {"Authorization": f"Bearer {'a' * 12 * 1024}"})
    status, seconds = await exchange(stack, entrypoint, oversized)
    assert status == 431
    assert seconds < PROMPT_SECONDS
    # The next ordinary request, on a new connection, is served.
    ordinary = request(route, await tokens.headers("viewer"))
    assert (await exchange(stack, entrypoint, ordinary))[0] == ROUTES[route][2]


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
@pytest.mark.parametrize("route", ROUTES)
async def test_the_limit_is_8_kib_of_request_line_and_headers(
    stack: Stack, tokens: Tokens, entrypoint: str, route: str
) -> None:
    headers = await tokens.headers("viewer")
    within = await exchange(stack, entrypoint, padded(route, headers, LIMIT_BYTES))
    assert within[0] == ROUTES[route][2]
    over = await exchange(stack, entrypoint, padded(route, headers, LIMIT_BYTES + 512))
    assert over[0] == 431


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
async def test_an_upgrade_with_more_than_128_header_fields_gets_431_at_once(
    stack: Stack, tokens: Tokens, entrypoint: str
) -> None:
    """Small enough for the edge, too many fields for the gateway's WebSocket parser."""
    many = {f"X-Filler-{i}": "v" for i in range(130)}
    status, seconds = await exchange(stack, entrypoint, request("WebSocket upgrade", many))
    assert status == 431
    assert seconds < PROMPT_SECONDS
    ordinary = request("WebSocket upgrade", await tokens.headers("viewer"))
    assert (await exchange(stack, entrypoint, ordinary))[0] == 101
