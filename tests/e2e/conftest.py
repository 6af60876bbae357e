"""Fixtures of the end-to-end suite: real Keycloak tokens and clients through Traefik :8080.

Every client here says, in `X-Forwarded-For`, that it is one address of TEST-NET-3
(203.0.113.0/24). Traefik passes that on from loopback as from any trusted proxy, so the
gateway limits these requests per that address like a real client's, and they do not use
up the per-address limits of 127.0.0.1 that every other test on this machine shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import httpx
import jwt
import pytest

from gatehouse_protos.authors.v1 import authors_pb2, authors_pb2_grpc
from tests.e2e.browser import Browser, chromium
from tests.harness.stack import Stack

# An origin the development profile allows to call the API from a browser
# (GATEWAY_CORS_ALLOWED_ORIGINS unset: docs/api.md, Cross-origin requests).
DEV_ORIGIN = "http://127.0.0.1:5173"
# The realm's development users (docs/operations.md, Development users).
USERS = ("admin", "editor", "viewer", "auditor", "nobody")
# A token is fetched again when it has less than this left (the realm gives 300 s).
TOKEN_MARGIN_SECONDS = 60.0
_addresses = itertools.count(1)


def client_address() -> str:
    """A fresh TEST-NET-3 address for one client of the suite."""
    return f"203.0.113.{next(_addresses) % 254 + 1}"


def own_address() -> str:
    """An address of the IPv6 documentation prefix that no other client uses: for a test
    that spends a whole per-address limit."""
    groups = uuid.uuid4().hex[:24]
    return "2001:db8:" + ":".join(groups[i : i + 4] for i in range(0, 24, 4))


class Tokens:
    """Access tokens of the realm's users, fetched from Keycloak through Traefik and reused
    until they come near their expiry (the suite outlasts one token's lifetime)."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._cached: dict[str, tuple[str, float]] = {}
        self._lock = asyncio.Lock()

    async def get(self, username: str) -> str:
        """A token of `username` valid for at least TOKEN_MARGIN_SECONDS more."""
        async with self._lock:
            token, expires = self._cached.get(username, ("", 0.0))
            if expires - time.time() < TOKEN_MARGIN_SECONDS:
                token = await asyncio.to_thread(self._stack.token, username)
                # Only our own expiry bookkeeping reads the claims; the gateway verifies.
                claims = jwt.decode(token, options={"verify_signature": False})
                self._cached[username] = (token, float(claims["exp"]))
            return token

    async def headers(self, username: str) -> dict[str, str]:
        """The Authorization header of `username`."""
        return {"Authorization": f"Bearer {await self.get(username)}"}


@pytest.fixture(scope="session")
def tokens(stack: Stack) -> Tokens:
    """Tokens of the realm's five development users."""
    return Tokens(stack)


@pytest.fixture
async def web(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the public entrypoint, as one client address of its own."""
    async with httpx.AsyncClient(
        base_url=stack.web_url,
        headers={"X-Forwarded-For": client_address()},
        timeout=20,
    ) as client:
        yield client


@pytest.fixture
async def author(web: httpx.AsyncClient, tokens: Tokens) -> AsyncIterator[dict[str, object]]:
    """An author created by admin for the test, deleted afterwards if it still exists."""
    headers = await tokens.headers("admin")
    created = await web.post("/authors", json={"name": f"e2e-{time.time_ns()}"}, headers=headers)
    assert created.status_code == 201, created.text
    body: dict[str, object] = created.json()
    yield body
    await web.delete(f"/authors/{body['id']}", headers=await tokens.headers("admin"))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium with a fresh profile (tests/e2e/browser.py)."""
    async with chromium() as opened:
        yield opened


@contextlib.asynccontextmanager
async def authors_service(stack: Stack) -> AsyncIterator[authors_pb2_grpc.AuthorsServiceAsyncStub]:
    """The authors service itself, through Traefik's internal gRPC entrypoint: changes made
    there need no gateway (to make them while no gateway replica runs)."""
    async with grpc.aio.insecure_channel(
        stack.grpc_target, options=[("grpc.default_authority", "authors")]
    ) as channel:
        yield authors_pb2_grpc.AuthorsServiceStub(channel)


async def create_through_authors(
    authors: authors_pb2_grpc.AuthorsServiceAsyncStub, name: str, within: float = 60.0
) -> int:
    """Create `name` with the authors service, trying again while it cannot be reached; its
    id (an answer lost after the commit is told by the name being taken)."""
    async with asyncio.timeout(within):
        while True:
            try:
                request = authors_pb2.CreateAuthorRequest(name=name)
                return int((await authors.CreateAuthor(request, timeout=10)).id)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                    found = await authors.ListAuthors(
                        authors_pb2.ListAuthorsRequest(filter=authors_pb2.AuthorFilter(name=name)),
                        timeout=10,
                    )
                    return int(found.authors[0].id)
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def gateways_stopped(stack: Stack) -> AsyncIterator[None]:
    """Every gateway replica stopped (supervisorctl through scripts/run.sh) for the body,
    then started again, whatever happened."""
    gateways = [f"gateway-{k}" for k in range(stack.replicas("gateway"))]
    try:
        for gateway in gateways:
            await asyncio.to_thread(stack.stop, gateway)
        yield
    finally:
        for gateway in gateways:
            await asyncio.to_thread(stack.start, gateway)
