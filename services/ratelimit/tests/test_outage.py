"""Redis down or hung: the fail mode holds, answers stay fast, and decisions recover once
Redis is back, without restarting the service. Each test stops a Redis of its own."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
import pytest

from gatehouse_protos.ratelimit.v1 import ratelimit_pb2 as pb
from tests.harness.private import PrivateRedis

if TYPE_CHECKING:
    from gatehouse_protos.ratelimit.v1.ratelimit_pb2_grpc import (
        RateLimitServiceAsyncStub as Stub,
    )
    from gatehouse_ratelimit.__main__ import RunningService

    StartService = Callable[..., Awaitable[tuple[RunningService, Stub]]]

Metric = Callable[..., float]

REQUEST = pb.RateLimitRequest(
    domain="api",
    descriptors=[
        pb.RateLimitDescriptor(entries=[pb.RateLimitDescriptor.Entry(key="user", value="o")])
    ],
)
LEASE = pb.AcquireLeaseRequest(domain="sockets", key="o", lease_id="c1")


async def test_fail_open_admits_and_counts_until_redis_returns(
    private_redis: PrivateRedis, start_service: StartService, metric: Metric
) -> None:
    _, stub = await start_service(private_redis.url, fail_mode="open", redis_timeout_ms=100)
    assert not (await stub.ShouldRateLimit(REQUEST, timeout=5)).fail_open
    fail_open = metric("rate_limit_fail_open_total")
    backend_errors = metric("rate_limit_backend_errors_total")
    decided_open = metric("rate_limit_decisions_total", domain="api", result="fail_open")

    private_redis.stop()
    reply = await stub.ShouldRateLimit(REQUEST, timeout=5)
    assert (reply.overall_code, reply.fail_open) == (pb.CODE_OK, True)
    lease = await stub.AcquireLease(LEASE, timeout=5)
    assert (lease.granted, lease.fail_open) == (True, True)
    assert metric("rate_limit_fail_open_total") == fail_open + 2
    assert metric("rate_limit_backend_errors_total") == backend_errors + 2
    decided = metric("rate_limit_decisions_total", domain="api", result="fail_open")
    assert decided == decided_open + 1

    # Back, with an empty script cache: the script is loaded again on NOSCRIPT.
    private_redis.start()
    reply = await stub.ShouldRateLimit(REQUEST, timeout=5)
    assert (reply.fail_open, reply.statuses[0].limit_remaining) == (False, 4)
    assert not (await stub.AcquireLease(LEASE, timeout=5)).fail_open


async def test_fail_closed_answers_unavailable_until_redis_returns(
    private_redis: PrivateRedis, start_service: StartService, metric: Metric
) -> None:
    _, stub = await start_service(private_redis.url, fail_mode="closed", redis_timeout_ms=100)
    unavailable = metric("rate_limit_decisions_total", domain="api", result="unavailable")
    handled = {
        "grpc_service": "gatehouse.ratelimit.v1.RateLimitService",
        "grpc_method": "ShouldRateLimit",
        "grpc_code": "UNAVAILABLE",
    }
    handled_before = metric("grpc_server_handled_total", **handled)
    fail_open = metric("rate_limit_fail_open_total")

    private_redis.stop()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ShouldRateLimit(REQUEST, timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as lease_raised:
        await stub.AcquireLease(LEASE, timeout=5)
    assert lease_raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert metric("rate_limit_decisions_total", domain="api", result="unavailable") == (
        unavailable + 1
    )
    assert metric("grpc_server_handled_total", **handled) == handled_before + 1
    assert metric("rate_limit_fail_open_total") == fail_open

    private_redis.start()
    reply = await stub.ShouldRateLimit(REQUEST, timeout=5)
    assert (reply.overall_code, reply.fail_open) == (pb.CODE_OK, False)


async def test_a_hung_redis_cannot_hold_a_decision_beyond_the_timeout(
    private_redis: PrivateRedis, start_service: StartService
) -> None:
    _, stub = await start_service(private_redis.url, fail_mode="open", redis_timeout_ms=100)
    await stub.ShouldRateLimit(REQUEST, timeout=5)
    process = private_redis._process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        started = time.perf_counter()
        reply = await stub.ShouldRateLimit(REQUEST, timeout=5)
        elapsed = time.perf_counter() - started
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert reply.fail_open
    assert elapsed < 1.0
    # The timed-out connection was dropped; the next decision talks to Redis again.
    reply = await stub.ShouldRateLimit(REQUEST, timeout=5)
    assert not reply.fail_open
