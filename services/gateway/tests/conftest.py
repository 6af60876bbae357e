"""Fixtures of the gateway tests: a realm's keys, the real services in-process, the gateway.

The authors, audit and ratelimit services run in this process on free ports against
the session's PostgreSQL and Redis; the gateway app runs in-process (httpx's ASGI
transport) and calls them over real gRPC. Tokens are signed with locally generated
keys whose JWKS the verifier reads through a stub transport.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gatehouse_audit.app import AuditApp
from gatehouse_audit.migrate import upgrade as upgrade_audit
from gatehouse_audit.settings import Settings as AuditSettings
from gatehouse_authors import migrate as authors_migrate
from gatehouse_authors.app import build_app as build_authors
from gatehouse_authors.settings import Settings as AuthorsSettings
from gatehouse_gateway.app import create_app
from gatehouse_gateway.auth import TokenVerifier
from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.settings import Settings
from gatehouse_kit.grpc_server import GrpcService
from gatehouse_ratelimit.__main__ import RunningService
from gatehouse_ratelimit.__main__ import build as build_ratelimit
from gatehouse_ratelimit.settings import Settings as RateLimitSettings
from services.gateway.tests.tokens import CLIENT_ID, ISSUER, JWKS_URL, Realm
from tests.harness.backends import Backend
from tests.harness.databases import create_database, drop_database

RULES = """
domains:
  http:
    descriptors:
      - name: http_per_user
        descriptor: [{key: user}]
        limits: {default: {requests_per_unit: 100000, unit: minute}}
      - name: http_per_ip
        descriptor: [{key: remote_address}]
        limits: {default: {requests_per_unit: 200000, unit: minute}}
  ws_messages:
    descriptors:
      - name: ws_messages_per_user
        descriptor: [{key: user}]
        limits: {default: {requests_per_unit: 100000, unit: minute}}
  ws_connections:
    lease:
      limits: {default: 50}
"""


@dataclass
class Upstreams:
    """The three services, running in this process."""

    authors: GrpcService
    authors_settings: AuthorsSettings
    audit: AuditApp
    ratelimit: RunningService

    def targets(self) -> dict[str, Any]:
        """Gateway settings that call each service directly and hear its change events
        (on a channel of its own, not a running stack's)."""
        return {
            "authors_stream": self.authors_settings.stream,
            "authors_target": f"127.0.0.1:{self.authors.port}",
            "authors_authority": "",
            "audit_target": f"127.0.0.1:{self.audit.port}",
            "audit_authority": "",
            "ratelimit_target": f"127.0.0.1:{self.ratelimit.grpc.port}",
            "ratelimit_authority": "",
        }


@pytest.fixture(scope="session")
def realm() -> Realm:
    """The identity provider of every gateway test: local keys, stub JWKS endpoint."""
    return Realm()


@pytest.fixture(scope="module")
async def upstreams(
    postgres: Backend, redis_server: Backend, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Upstreams]:
    """authors, audit and ratelimit on throwaway databases, served on free ports."""
    authors_db = await create_database(postgres.url, "gateway_authors")
    audit_db = await create_database(postgres.url, "gateway_audit")
    # One after the other: Alembic's environment is process-global.
    await asyncio.to_thread(authors_migrate.upgrade, authors_db)
    await asyncio.to_thread(upgrade_audit, audit_db)
    rules = tmp_path_factory.mktemp("ratelimit") / "rules.yaml"
    rules.write_text(RULES)
    authors_settings = AuthorsSettings(
        database_url=authors_db,
        redis_url=redis_server.url,
        stream=f"test:authors:{uuid.uuid4().hex}",
        grpc_port=0,
        migrate_on_start=False,
    )
    authors = build_authors(authors_settings).grpc_service(authors_settings)
    await authors.start()
    audit = AuditApp(
        AuditSettings(
            database_url=audit_db, grpc_port=0, batch_interval_ms=10, retention_days=36_500
        )
    )
    await audit.start()
    ratelimit = await build_ratelimit(
        RateLimitSettings(
            redis_url=redis_server.url,
            grpc_port=0,
            rules_path=Path(rules),
            key_prefix=f"test:{uuid.uuid4().hex}:",
        )
    )
    await ratelimit.grpc.start()
    yield Upstreams(authors, authors_settings, audit, ratelimit)
    await ratelimit.grpc.stop()
    await audit.stop()
    await authors.stop()
    await drop_database(postgres.url, authors_db)
    await drop_database(postgres.url, audit_db)


def gateway_settings(upstreams: Upstreams, redis_url: str, **overrides: Any) -> Settings:
    """Gateway settings against the in-process services, with short deadlines."""
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "jwks_url": JWKS_URL,
        "client_id": CLIENT_ID,
        "redis_url": redis_url,
        "upstream_deadline_seconds": 2.0,
        "breaker_open_seconds": 0.5,
        **upstreams.targets(),
        **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def running_gateway(
    settings: Settings, realm: Realm, peer: tuple[str, int] = ("127.0.0.1", 40000)
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The gateway app with its lifespan running, and a client that reaches it as `peer`."""
    context = GatewayContext.build(settings)
    context.verifier = TokenVerifier(settings, httpx.AsyncClient(transport=realm.transport()))
    app = create_app(settings, context)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield app, client


@pytest.fixture(scope="module")
async def gateway(
    upstreams: Upstreams, redis_server: Backend, realm: Realm
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway on this module's services (peer 127.0.0.1, a trusted proxy)."""
    async with running_gateway(gateway_settings(upstreams, redis_server.url), realm) as (_, client):
        yield client
