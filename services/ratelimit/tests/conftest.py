"""Fixtures of the ratelimit tests: small rules with 1-second windows, services on real
Redis (a key prefix of each test's own), a store, and metric and error helpers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from gatehouse_kit.errors import field_violations
from gatehouse_kit.grpc_client import open_channel
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2 as pb
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2_grpc
from gatehouse_ratelimit.__main__ import RunningService, build
from gatehouse_ratelimit.settings import Settings
from gatehouse_ratelimit.store import RedisStore
from tests.harness.backends import Backend

RULES = """\
domains:
  api:
    descriptors:
      - name: per_user
        descriptor: [{key: user}]
        limits:
          default: {requests_per_unit: 5, unit: second}
          admin: {requests_per_unit: 10, unit: second}
      - name: per_ip
        descriptor: [{key: remote_address}]
        limits:
          default: {requests_per_unit: 8, unit: second}
      - name: trusted_ip
        descriptor: [{key: remote_address, value: 10.0.0.1}]
        unlimited: true
      - name: per_path
        descriptor: [{key: path}]
        shadow_mode: true
        limits:
          default: {requests_per_unit: 2, unit: second}
  sockets:
    lease:
      limits: {default: 2, admin: 4}
"""


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    """The test rules, in a folder of the test's own (the service watches the folder)."""
    path = tmp_path / "rules" / "rules.yaml"
    path.parent.mkdir()
    path.write_text(RULES)
    return path


def unique_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:10]}:"


if TYPE_CHECKING:
    from gatehouse_protos.ratelimit.v1.ratelimit_pb2_grpc import (
        RateLimitServiceAsyncStub as Stub,
    )

    StartService = Callable[..., Awaitable[tuple[RunningService, Stub]]]


@pytest.fixture
async def start_service(rules_path: Path) -> AsyncIterator[StartService]:
    """Starts services on free ports (settings as keyword overrides); stops them after."""
    started: list[tuple[RunningService, grpc.aio.Channel]] = []

    async def start(redis_url: str, **overrides: object) -> tuple[RunningService, Stub]:
        values: dict[str, object] = {
            "redis_url": redis_url,
            "rules_path": rules_path,
            "grpc_port": 0,
            "key_prefix": unique_prefix(),
            "fail_mode": "closed",
            "lease_ttl_seconds": 1.0,
            # Generous: the machine running the tests is shared and busy.
            "redis_timeout_ms": 1000,
            "rules_reload_debounce_ms": 50,
            **overrides,
        }
        running = await build(Settings(**values))  # type: ignore[arg-type]
        await running.grpc.start()
        channel = open_channel(f"127.0.0.1:{running.grpc.port}", max_attempts=1)
        started.append((running, channel))
        return running, ratelimit_pb2_grpc.RateLimitServiceStub(channel)

    yield start
    for running, channel in started:
        await channel.close()
        await running.stop()


@pytest.fixture
async def served(redis_server: Backend, start_service: StartService) -> tuple[RunningService, Stub]:
    """The service on the shared Redis, failing closed, with 1-second lease TTLs."""
    return await start_service(redis_server.url)


@pytest.fixture
def running(served: tuple[RunningService, Stub]) -> RunningService:
    return served[0]


@pytest.fixture
def stub(served: tuple[RunningService, Stub]) -> Stub:
    return served[1]


@pytest.fixture
def decide(stub: Stub) -> Callable[..., Awaitable[pb.RateLimitResponse]]:
    """decide(domain, (key, value), ..., hits=0, tier=""): one ShouldRateLimit call with a
    single-entry descriptor per (key, value) pair."""

    async def call(
        domain: str, *entries: tuple[str, str], hits: int = 0, tier: str = ""
    ) -> pb.RateLimitResponse:
        request = pb.RateLimitRequest(
            domain=domain,
            descriptors=[
                pb.RateLimitDescriptor(entries=[pb.RateLimitDescriptor.Entry(key=k, value=v)])
                for k, v in entries
            ],
            hits_addend=hits,
            tier=tier,
        )
        return await stub.ShouldRateLimit(request, timeout=5)

    return call


@pytest.fixture
async def store(redis_server: Backend) -> AsyncIterator[RedisStore]:
    """A store on the shared Redis with a key prefix of the test's own."""
    redis_store = RedisStore(redis_server.url, timeout_seconds=2.0, key_prefix=unique_prefix())
    yield redis_store
    await redis_store.close()


@pytest.fixture
def metric() -> Callable[..., float]:
    """metric(name, **labels): a sample's current value in this process (0 when unset)."""

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    return value


@pytest.fixture
def bad_fields() -> Callable[[grpc.aio.AioRpcError], list[str]]:
    """The fields named by an INVALID_ARGUMENT's google.rpc.BadRequest details."""

    def fields(error: grpc.aio.AioRpcError) -> list[str]:
        status = rpc_status.from_call(error)
        assert status is not None
        return [field for field, _ in field_violations(status)]

    return fields


@pytest.fixture
def until() -> Callable[..., Awaitable[None]]:
    """until(condition, within=10): wait for a condition, e.g. a reload the file watcher
    did on its own (it signals nothing but its rules and metrics, hence the polling)."""

    async def wait(condition: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    return wait
