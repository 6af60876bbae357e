"""Fixtures of the /web tests: real authors and ratelimit services, real Redis, and gateway
apps served by uvicorn in-process on free ports.

Tokens here are RS256 JWTs signed by a key generated for the session, whose JWKS a real
HTTP server on loopback publishes; the gateway's verifier fetches and checks them as it
would Keycloak's. That lets tests pick any lifetime and roles (expiry, refresh).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from gatehouse_authors import migrate
from gatehouse_authors.app import build_app
from gatehouse_authors.settings import Settings as AuthorsSettings
from gatehouse_gateway.app import create_app
from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.server import GracefulServer, uvicorn_config
from gatehouse_gateway.settings import Settings
from gatehouse_gateway.websocket.hub import WebSocketHub
from gatehouse_kit.grpc_server import GrpcService
from gatehouse_protos.websocket import websocket_pb2
from gatehouse_ratelimit.__main__ import RunningService, build
from gatehouse_ratelimit.settings import Settings as RateLimitSettings
from tests.harness.backends import Backend
from tests.harness.databases import create_database, drop_database
from tests.harness.private import free_port
from tests.harness.stack import Stack, running_stack

ISSUER = "http://gatehouse.test/auth/realms/gatehouse"
CLIENT = "gatehouse-web"
ORIGIN = "http://app.gatehouse.test"
# Small limits so the tests can reach them quickly.
MESSAGES_PER_MINUTE = 40
CONNECTIONS_PER_USER = 3
RULES = f"""
domains:
  http:
    descriptors:
      - name: http_per_user
        descriptor: [{{key: user}}]
        limits: {{default: {{requests_per_unit: 1000, unit: minute}}}}
  ws_messages:
    descriptors:
      - name: ws_messages_per_user
        descriptor: [{{key: user}}]
        limits:
          default: {{requests_per_unit: {MESSAGES_PER_MINUTE}, unit: minute}}
          admin: {{requests_per_unit: 100000, unit: minute}}
  ws_connections:
    lease:
      limits: {{default: {CONNECTIONS_PER_USER}, admin: 1000}}
"""


@pytest.fixture(scope="session")
def limits() -> dict[str, int]:
    """The limits of the test rules."""
    return {
        "messages_per_minute": MESSAGES_PER_MINUTE,
        "connections_per_user": CONNECTIONS_PER_USER,
    }


ROLES = {
    "admin": ["admin", "get-authors", "create-author", "update-author", "delete-author"],
    "editor": ["get-authors", "create-author", "update-author", "delete-author"],
    "viewer": ["get-authors"],
    "nobody": [],
}


class _Jwks(BaseHTTPRequestHandler):
    document = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.document)))
        self.end_headers()
        self.wfile.write(self.document)

    def log_message(self, format: str, *args: Any) -> None:
        return


@dataclass
class Issuer:
    """Mints tokens signed by the session's key, published at `jwks_url`."""

    key: rsa.RSAPrivateKey
    jwks_url: str

    def token(
        self,
        role_set: str = "editor",
        *,
        user: str | None = None,
        lifetime: float = 300.0,
    ) -> str:
        """A token of a fresh (or the given) user with the roles of a CONTRACT user."""
        subject = user or str(uuid.uuid4())
        now = time.time()
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "azp": CLIENT,
            "preferred_username": f"{role_set}-{subject[:8]}",
            "iat": int(now),
            "exp": now + lifetime,
            "resource_access": {CLIENT: {"roles": ROLES[role_set]}},
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "test-key"})


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    """The session's token issuer and its JWKS endpoint."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "test-key", "use": "sig", "alg": "RS256"})
    _Jwks.document = json.dumps({"keys": [jwk]}).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Issuer(key, f"http://127.0.0.1:{server.server_port}/certs")
    server.shutdown()
    server.server_close()


@dataclass(frozen=True)
class Upstreams:
    """Where the session's authors and ratelimit services listen."""

    authors: str
    ratelimit: str
    stream: str


@pytest.fixture(scope="session")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ratelimit rules of these tests."""
    rules = tmp_path_factory.mktemp("ratelimit") / "rules.yaml"
    rules.write_text(RULES)
    return rules


@pytest.fixture(scope="session")
async def upstreams(
    postgres: Backend, redis_server: Backend, rules_file: Path
) -> AsyncIterator[Upstreams]:
    """The authors service (throwaway database) and ratelimit service (test rules)."""
    database = await create_database(postgres.url, "ws_test")
    await asyncio.to_thread(migrate.upgrade, database)
    channel = f"test:ws:{uuid.uuid4().hex}"
    authors_settings = AuthorsSettings(
        database_url=database,
        redis_url=redis_server.url,
        stream=channel,
        grpc_port=0,
        metrics_port=0,
        migrate_on_start=False,
    )
    authors: GrpcService = build_app(authors_settings).grpc_service(authors_settings)
    await authors.start()
    ratelimit: RunningService = await build(
        RateLimitSettings(
            grpc_port=0,
            metrics_port=0,
            redis_url=redis_server.url,
            rules_path=rules_file,
            key_prefix=f"ws-test-{uuid.uuid4().hex[:8]}:",
        )
    )
    await ratelimit.grpc.start()
    yield Upstreams(f"127.0.0.1:{authors.port}", f"127.0.0.1:{ratelimit.grpc.port}", channel)
    await ratelimit.stop()
    await authors.stop()
    await drop_database(postgres.url, database)


@dataclass
class Gateway:
    """A gateway app served in-process."""

    app: FastAPI
    server: GracefulServer
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/web"

    @property
    def context(self) -> GatewayContext:
        context: GatewayContext = self.app.state.context
        return context

    @property
    def hub(self) -> WebSocketHub:
        hub: WebSocketHub = self.app.state.websocket_hub
        return hub


GatewayFactory = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture(scope="session")
def gateway_settings(
    upstreams: Upstreams, issuer: Issuer, redis_server: Backend
) -> Callable[..., Settings]:
    """Gateway settings wired to the session's services; keyword arguments override."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "issuer": ISSUER,
            "jwks_url": issuer.jwks_url,
            "client_id": CLIENT,
            "authors_target": upstreams.authors,
            "authors_authority": "",
            "ratelimit_target": upstreams.ratelimit,
            "ratelimit_authority": "",
            # Nobody listens there: audit events stay buffered, which the tests read.
            "audit_target": f"127.0.0.1:{free_port()}",
            "audit_authority": "",
            "redis_url": redis_server.url,
            "authors_stream": upstreams.stream,
            "ws_allowed_origins": (ORIGIN,),
            "shutdown_grace_seconds": 2.0,
            **overrides,
        }
        return Settings(**values)

    return make


@asynccontextmanager
async def _serve(settings: Settings) -> AsyncIterator[Gateway]:
    app = create_app(settings)
    # The production server settings, on a free loopback port.
    config = uvicorn_config(settings, app)
    config.host, config.port = "127.0.0.1", 0
    server = GracefulServer(config, app)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    gateway = Gateway(app, server, port)
    await asyncio.wait_for(gateway.hub.listening.wait(), timeout=10)
    try:
        yield gateway
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
def serve_gateway(gateway_settings: Callable[..., Settings]) -> GatewayFactory:
    """`async with serve_gateway(**settings) as gw:` runs a gateway for the block."""

    def factory(**overrides: Any) -> AbstractAsyncContextManager[Gateway]:
        return _serve(gateway_settings(**overrides))

    return factory


@pytest.fixture(scope="session")
async def gateway(serve_gateway: GatewayFactory) -> AsyncIterator[Gateway]:
    """One gateway shared by the tests that need nothing special."""
    async with serve_gateway() as gw:
        yield gw


ZERO_REQ_ID = "00000000-0000-0000-0000-000000000000"


class Client:
    """A /web client speaking either format; frames come back as dicts."""

    def __init__(self, connection: ClientConnection, fmt: str) -> None:
        self.connection = connection
        self.format = fmt
        self.broadcasts: list[dict[str, Any]] = []

    def encode(self, pkg_id: int, data: Any, req_id: str, method: str = "") -> str | bytes:
        if self.format == "protobuf":
            return websocket_pb2.Request(
                pkg_id=pkg_id, req_id=req_id, method=method, data_json=json.dumps(data)
            ).SerializeToString()
        return json.dumps({"pkg_id": pkg_id, "req_id": req_id, "method": method, "data": data})

    async def frame(self) -> dict[str, Any]:
        """The next frame, decoded (responses, broadcasts and control frames alike)."""
        raw = await self.connection.recv()
        if isinstance(raw, str):
            decoded: dict[str, Any] = json.loads(raw)
            return decoded
        response = websocket_pb2.Response.FromString(raw)
        if response.req_id == ZERO_REQ_ID:
            broadcast = websocket_pb2.Broadcast.FromString(raw)
            decoded = {
                "pkg_id": broadcast.pkg_id,
                "req_id": broadcast.req_id,
                "data": json.loads(broadcast.data_json),
            }
            if broadcast.offset:
                decoded["offset"] = broadcast.offset
            return decoded
        meta = None
        if response.HasField("meta"):
            meta = {
                "page": response.meta.page,
                "per_page": response.meta.per_page,
                "total": response.meta.total,
                "pages": response.meta.pages,
                "next_cursor": response.meta.next_cursor or None,
                "has_more": response.meta.has_more,
            }
        return {
            "pkg_id": response.pkg_id,
            "req_id": response.req_id,
            "status_code": response.status_code,
            "meta": meta,
            "data": json.loads(response.data_json) if response.data_json else None,
        }

    async def send_raw(self, frame: str | bytes) -> None:
        await self.connection.send(frame)

    async def response(self, req_id: str | None) -> dict[str, Any]:
        """The response to `req_id`, keeping broadcasts that arrive first."""
        while True:
            frame = await self.frame()
            if frame.get("req_id") == ZERO_REQ_ID:
                self.broadcasts.append(frame)
                continue
            if frame.get("req_id") == req_id:
                return frame

    async def request(self, pkg_id: int, data: Any = None, method: str = "") -> dict[str, Any]:
        """Send a request and return its response."""
        req_id = str(uuid.uuid4())
        await self.connection.send(self.encode(pkg_id, data or {}, req_id, method))
        return await self.response(req_id)

    async def broadcast(self) -> dict[str, Any]:
        """The next broadcast."""
        if self.broadcasts:
            return self.broadcasts.pop(0)
        while True:
            frame = await self.frame()
            if frame.get("req_id") == ZERO_REQ_ID:
                return frame

    async def closed(self) -> tuple[int | None, str | None]:
        """Read until the server closes; its close code and reason."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.connection.recv()
        return self.connection.close_code, self.connection.close_reason


Connect = Callable[..., AbstractAsyncContextManager[Client]]


@asynccontextmanager
async def _connect(
    gateway: Gateway,
    token: str | None,
    *,
    fmt: str = "json",
    header: bool = True,
    origin: str | None = None,
) -> AsyncIterator[Client]:
    url = gateway.url if fmt == "json" else f"{gateway.url}?format={fmt}"
    headers = {"Authorization": f"Bearer {token}"} if header and token else {}
    async with connect(
        url,
        additional_headers=headers,
        origin=Origin(origin) if origin else None,
        max_size=None,
        open_timeout=5,
    ) as connection:
        client = Client(connection, fmt)
        if not header and token:
            await connection.send(json.dumps({"type": "auth", "token": f"Bearer {token}"}))
        if token:
            ok = await client.frame()
            assert ok["type"] == "auth_ok", ok
        yield client


@pytest.fixture(scope="session")
def ws() -> Connect:
    """`async with ws(gateway, token, fmt=..., header=...) as client:` an authenticated client."""
    return _connect


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The whole platform behind Traefik, with the realm's development users."""
    with running_stack() as running:
        yield running
