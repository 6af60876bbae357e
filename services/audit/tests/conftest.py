"""Fixtures of the audit service's tests: a throwaway database per module, running
services over it, gRPC stubs, and an event factory."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest

from gatehouse_audit.app import AuditApp
from gatehouse_audit.events import to_timestamp
from gatehouse_audit.migrate import upgrade
from gatehouse_audit.settings import Settings
from gatehouse_kit.grpc_client import open_channel
from gatehouse_protos.audit.v1 import audit_pb2, audit_pb2_grpc
from tests.harness.backends import Backend
from tests.harness.databases import create_database, drop_database

EventFactory = Callable[..., audit_pb2.AuditEvent]


@pytest.fixture(scope="module")
async def audit_db(postgres: Backend) -> AsyncIterator[str]:
    """URL of a migrated audit database of this test module's own."""
    url = await create_database(postgres.url, "audit_test")
    await asyncio.to_thread(upgrade, url)
    yield url
    await drop_database(postgres.url, url)


def audit_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test service: free ports, short timings."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "grpc_port": 0,
        "metrics_port": 0,
        "shutdown_grace_seconds": 10.0,
        "batch_interval_ms": 10,
        "write_retry_initial_seconds": 0.05,
        "write_retry_max_seconds": 0.5,
        "db_connect_timeout_seconds": 2.0,
        # Fixed-date datasets must outlive retention unless a test says otherwise.
        "retention_days": 36_500,
        **overrides,
    }
    return Settings(**values)


AppFactory = Callable[..., "asyncio.Future[AuditApp]"]


@pytest.fixture
async def start_audit() -> AsyncIterator[Callable[..., Any]]:
    """Start an AuditApp on a database (with setting overrides); stopped after the test."""
    apps: list[AuditApp] = []

    async def start(database_url: str, **overrides: Any) -> AuditApp:
        app = AuditApp(audit_settings(database_url, **overrides))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        if app.grpc is not None:
            await app.stop()


@pytest.fixture
async def audit_app(audit_db: str, start_audit: Callable[..., Any]) -> AuditApp:
    """An audit service over the module's database."""
    app: AuditApp = await start_audit(audit_db)
    return app


@pytest.fixture
async def channel(audit_app: AuditApp) -> AsyncIterator[grpc.aio.Channel]:
    ch = open_channel(f"127.0.0.1:{audit_app.port}", max_attempts=1)
    yield ch
    await ch.close()


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> audit_pb2_grpc.AuditServiceAsyncStub:
    return audit_pb2_grpc.AuditServiceStub(channel)


@pytest.fixture
async def db(audit_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the module's database, to check what is stored."""
    conn = await asyncpg.connect(audit_db)
    yield conn
    await conn.close()


def new_event(**fields: Any) -> audit_pb2.AuditEvent:
    when = fields.pop("when", None) or datetime.now(UTC)
    values: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "user_id": "u-1",
        "username": "ada",
        "user_roles": ["get-authors"],
        "action_type": "GET /authors",
        "resource": "/authors",
        "outcome": audit_pb2.OUTCOME_SUCCESS,
        "ip_address": "10.0.0.1",
        "user_agent": "pytest",
        "request_id": "req-1",
        "request_data": "{}",
        "response_status": 200,
        "duration_ms": 1.5,
        **fields,
    }
    return audit_pb2.AuditEvent(timestamp=to_timestamp(when), **values)


@pytest.fixture
def make_event() -> EventFactory:
    """Build an AuditEvent: a fresh event_id, now, defaults overridable by keyword
    (`when=` a datetime sets the timestamp)."""
    return new_event


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Wait for a condition that no event announces (for example what a server has
    admitted from calls still in flight), checking it every few milliseconds."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 (nothing to await: the state is remote)
            await asyncio.sleep(0.01)
