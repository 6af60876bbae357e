"""`python -m gatehouse_ratelimit` as deployed: shipped rules, health, a decision, /metrics,
and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatehouse_kit.grpc_client import open_channel
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2 as pb
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2_grpc
from tests.harness.backends import Backend
from tests.harness.private import free_port


async def test_the_entry_point_serves_the_shipped_rules_and_stops_on_sigterm(
    redis_server: Backend, tmp_path: Path
) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "RATELIMIT_GRPC_PORT": str(grpc_port),
        "RATELIMIT_METRICS_PORT": str(metrics_port),
        "RATELIMIT_REDIS_URL": redis_server.url,
        "RATELIMIT_KEY_PREFIX": f"test:{uuid.uuid4().hex[:10]}:",
        "GATEHOUSE_PROFILE": "production",
    }
    # Started outside the checkout: the default relative rules path still finds its file.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatehouse_ratelimit",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    channel = open_channel(f"127.0.0.1:{grpc_port}", max_attempts=1)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="gatehouse.ratelimit.v1.RateLimitService")
        reply = await health.Check(check, timeout=20, wait_for_ready=True)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        decision = await stub.ShouldRateLimit(
            pb.RateLimitRequest(
                domain="http",
                descriptors=[
                    pb.RateLimitDescriptor(
                        entries=[pb.RateLimitDescriptor.Entry(key="user", value="someone")]
                    )
                ],
            ),
            timeout=5,
        )
        limit = decision.statuses[0].current_limit
        assert (limit.name, limit.requests_per_unit, limit.unit) == (
            "http_per_user",
            100,
            pb.UNIT_MINUTE,
        )
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert 'rate_limit_decisions_total{domain="http",result="ok"} 1.0' in metrics
        assert "rate_limit_rules_last_reload_success 1.0" in metrics
    finally:
        await channel.close()
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 20)
    stderr = err.decode()
    assert process.returncode == 0, stderr
    assert '"fail_mode": "closed"' in stderr
