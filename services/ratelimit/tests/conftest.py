"""Fixtures of the ratelimit tests: small rules with 1-second windows, a served service
on the shared Redis (a key prefix of each test's own), and a Redis store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

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


@dataclass
class Served:
    """A running ratelimit service, a client stub and the settings it was built with."""

    running: RunningService
    stub: ratelimit_pb2_grpc.RateLimitServiceAsyncStub
    channel: grpc.aio.Channel
    settings: Settings

    async def decide(
        self,
        domain: str,
        *entries: tuple[str, str],
        hits: int = 0,
        tier: str = "",
    ) -> pb.RateLimitResponse:
        """One ShouldRateLimit call with one single-entry descriptor per (key, value)."""
        request = pb.RateLimitRequest(
            domain=domain,
            descriptors=[
                pb.RateLimitDescriptor(entries=[pb.RateLimitDescriptor.Entry(key=k, value=v)])
                for k, v in entries
            ],
            hits_addend=hits,
            tier=tier,
        )
        return await self.stub.ShouldRateLimit(request, timeout=5)


async def serve(redis_url: str, rules_path: Path, **overrides: object) -> Served:
    """Build and start the service on a free port against `redis_url`."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "rules_path": rules_path,
        "grpc_port": 0,
        "key_prefix": unique_prefix(),
        "fail_mode": "closed",
        "lease_ttl_seconds": 1.0,
        # Generous: the test machine is shared and busy; outage tests set their own.
        "redis_timeout_ms": 1000,
        "rules_reload_debounce_ms": 50,
        **overrides,
    }
    settings = Settings(**values)  # type: ignore[arg-type]
    running = await build(settings)
    await running.grpc.start()
    channel = open_channel(f"127.0.0.1:{running.grpc.port}", "ratelimit", max_attempts=1)
    return Served(running, ratelimit_pb2_grpc.RateLimitServiceStub(channel), channel, settings)


async def shut(served: Served) -> None:
    await served.channel.close()
    await served.running.stop()


@pytest.fixture
async def served(redis_server: Backend, rules_path: Path) -> AsyncIterator[Served]:
    """The service on the shared Redis, failing closed, with 1-second lease TTLs."""
    service = await serve(redis_server.url, rules_path)
    yield service
    await shut(service)


@pytest.fixture
async def store(redis_server: Backend) -> AsyncIterator[RedisStore]:
    """A store on the shared Redis with a key prefix of the test's own."""
    redis_store = RedisStore(redis_server.url, timeout_seconds=2.0, key_prefix=unique_prefix())
    yield redis_store
    await redis_store.close()
