"""ratelimit: decisions through gRPC beside raw EVALSHA of the same script, in one run.

Starts a private Redis and the service (`python -m gatehouse_ratelimit`, a subprocess)
with rules generous enough that every decision is admitted, so each call does the same
work: an HTTP-like decision over two descriptors (user and client address).

- peak: closed-loop decisions per second through gRPC, and raw EVALSHA of the sliding
  window script from redis-py with the same keys and arguments;
- Redis round trips per decision: commands the service sent (MONITOR) over a batch;
- p99 at half of the gRPC peak: an open loop that sends at a fixed rate and measures
  each call from its scheduled start, so queueing is not hidden;
- for context, the same gRPC server bootstrap answering a constant (no Redis, no rules):
  the rate that the Python gRPC stack itself allows on this machine.

Run: `uv run python -m benchmarks ratelimit`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.common import Figure, Measurement, measure, percentile, write_result
from gatehouse_kit.grpc_client import open_channel
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2 as pb
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2_grpc
from gatehouse_ratelimit.store import SLIDING_WINDOW_LUA
from tests.harness.private import PrivateRedis, free_port

USERS = 1000
CONCURRENCY = 32
DURATION = 5.0
OPEN_LOOP_SECONDS = 5.0
COUNTED_DECISIONS = 2000
RULES = """\
domains:
  bench:
    descriptors:
      - descriptor: [{key: user}]
        limits: {default: {requests_per_unit: 1000000, unit: hour}}
      - descriptor: [{key: remote_address}]
        limits: {default: {requests_per_unit: 1000000, unit: hour}}
"""
HOUR_US = 3600 * 1_000_000
# The same server bootstrap answering a constant: what gRPC itself costs, for context.
FLOOR_SERVER = """
import asyncio, sys
from gatehouse_kit.grpc_server import GrpcService
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2 as pb, ratelimit_pb2_grpc

class Constant(ratelimit_pb2_grpc.RateLimitServiceServicer):
    async def ShouldRateLimit(self, request, context):
        return pb.RateLimitResponse(overall_code=pb.CODE_OK)

def register(server):
    ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server(Constant(), server)
    return ["gatehouse.ratelimit.v1.RateLimitService"]

async def main():
    port = int(sys.argv[1])
    service = GrpcService(register, host="127.0.0.1", port=port, grace_seconds=1)
    await service.serve_until_signalled()

asyncio.run(main())
"""


def decision_request(i: int) -> pb.RateLimitRequest:
    """The i-th HTTP-like decision: a user among USERS and a client address."""
    entry = pb.RateLimitDescriptor.Entry
    return pb.RateLimitRequest(
        domain="bench",
        descriptors=[
            pb.RateLimitDescriptor(entries=[entry(key="user", value=f"u{i % USERS}")]),
            pb.RateLimitDescriptor(
                entries=[entry(key="remote_address", value=f"10.0.{i % 250}.1")]
            ),
        ],
    )


async def start_service(*argv: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start `python argv…` and wait until its gRPC health check (on env's port) answers."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *argv, env={**os.environ, **env}, stdout=asyncio.subprocess.DEVNULL
    )
    port = env["RATELIMIT_GRPC_PORT"]
    channel = open_channel(f"127.0.0.1:{port}", "ratelimit", max_attempts=1)
    try:
        await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True
        )
    except BaseException:
        process.terminate()
        await process.wait()
        raise
    finally:
        await channel.close()
    return process


async def round_trips_per_decision(
    client: redis.Redis, stub: ratelimit_pb2_grpc.RateLimitServiceAsyncStub
) -> tuple[float, dict[str, int]]:
    """Commands that clients sent to Redis (MONITOR, leaving out those run inside Lua)
    per decision, over a sequential, counted batch."""
    sent: dict[str, int] = {}
    ready = asyncio.Event()

    async def watch() -> None:
        async with client.monitor() as monitor:
            ready.set()
            async for command in monitor.listen():
                if command["command"] == "ECHO bench-done":
                    return
                if command["client_type"] != "lua":
                    name = command["command"].split(" ", 1)[0].lower()
                    sent[name] = sent.get(name, 0) + 1

    watcher = asyncio.create_task(watch())
    await ready.wait()
    for i in range(COUNTED_DECISIONS):
        await stub.ShouldRateLimit(decision_request(i), timeout=5)
    await client.echo("bench-done")
    await watcher
    return sum(sent.values()) / COUNTED_DECISIONS, sent


async def open_loop(
    stub: ratelimit_pb2_grpc.RateLimitServiceAsyncStub, rate: float, seconds: float
) -> Measurement:
    """Send `rate` calls per second for `seconds`; latency from each call's scheduled start."""
    latencies: list[float] = []
    total = int(rate * seconds)
    interval = 1 / rate

    async def one(i: int, scheduled: float) -> None:
        await stub.ShouldRateLimit(decision_request(i), timeout=5)
        latencies.append((time.perf_counter() - scheduled) * 1000)

    tasks = []
    begin = time.perf_counter()
    for i in range(total):
        scheduled = begin + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return Measurement(
        f"grpc_open_loop_{rate:.0f}_per_s", total, time.perf_counter() - begin, latencies
    )


async def run() -> dict[str, Any]:
    """Measure, print and write benchmarks/results/ratelimit.json."""
    server = PrivateRedis()
    server.start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-ratelimit-"))
    rules = workdir / "rules.yaml"
    rules.write_text(RULES)
    client = redis.Redis.from_url(server.url)
    port, floor_port = free_port(), free_port()
    started: list[asyncio.subprocess.Process] = []
    try:
        started.append(
            await start_service(
                "-m",
                "gatehouse_ratelimit",
                env={
                    "RATELIMIT_GRPC_PORT": str(port),
                    "RATELIMIT_METRICS_PORT": str(free_port()),
                    "RATELIMIT_REDIS_URL": server.url,
                    "RATELIMIT_RULES_PATH": str(rules),
                    "RATELIMIT_FAIL_MODE": "closed",
                    "LOG_LEVEL": "ERROR",
                },
            )
        )
        started.append(
            await start_service(
                "-c", FLOOR_SERVER, str(floor_port), env={"RATELIMIT_GRPC_PORT": str(floor_port)}
            )
        )
        channel = open_channel(f"127.0.0.1:{port}", "ratelimit", max_attempts=1)
        floor_channel = open_channel(f"127.0.0.1:{floor_port}", "ratelimit", max_attempts=1)
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        script = client.register_script(SLIDING_WINDOW_LUA)
        # Fail-closed answers (Redis slower than the service's timeout) are counted here.
        errors: dict[str, int] = {}

        async def raw_evalsha(i: int) -> object:
            base = f"raw:{i % USERS}"
            keys = [f"{base}:u:log", f"{base}:u:sum", f"{base}:ip:log", f"{base}:ip:sum"]
            limit: list[str | int] = [1_000_000, HOUR_US, "0"]
            args: list[str | int] = ["", f"raw{i}", 1, *limit, *limit]
            return await script(keys=keys, args=args)

        async def grpc_decision(i: int) -> object:
            try:
                return await stub.ShouldRateLimit(decision_request(i), timeout=5)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] = errors.get(error.code().name, 0) + 1
                return None

        raw = await measure("raw_evalsha", raw_evalsha, concurrency=CONCURRENCY, duration=DURATION)
        peak = await measure("grpc_peak", grpc_decision, concurrency=CONCURRENCY, duration=DURATION)
        floor_stub = ratelimit_pb2_grpc.RateLimitServiceStub(floor_channel)

        async def floor_call(i: int) -> object:
            return await floor_stub.ShouldRateLimit(decision_request(i), timeout=5)

        floor = await measure(
            "grpc_floor_constant_reply", floor_call, concurrency=CONCURRENCY, duration=DURATION
        )
        trips, commands = await round_trips_per_decision(client, stub)
        half = await open_loop(stub, peak.rate / 2, OPEN_LOOP_SECONDS)
        await channel.close()
        await floor_channel.close()
    finally:
        for process in started:
            process.terminate()
            await process.wait()
        await client.aclose()
        server.destroy()

    ratio = peak.rate / raw.rate if raw.rate else 0.0
    p99 = percentile(half.latencies_ms, 99)
    figures = [
        Figure(
            "grpc decisions per second vs raw EVALSHA",
            round(ratio, 3),
            "ratio",
            "raw EVALSHA of the same script from redis-py (per second)",
            round(raw.rate, 1),
            ">= 0.30",
            ratio >= 0.30,
        ),
        Figure(
            "p99 at half of the gRPC peak",
            round(p99, 3),
            "ms",
            "gRPC peak (decisions per second)",
            round(peak.rate, 1),
            "< 5 ms",
            p99 < 5.0,
        ),
        Figure(
            "Redis round trips per decision",
            round(trips, 3),
            "commands",
            "decisions counted",
            COUNTED_DECISIONS,
            "1 (one EVALSHA)",
            round(trips, 3) == 1.0,
        ),
    ]
    result = write_result(
        "ratelimit",
        figures,
        [raw, peak, half, floor],
        command="uv run python -m benchmarks ratelimit",
        redis_commands_per_batch=commands,
        grpc_errors=errors,
        concurrency=CONCURRENCY,
    )
    for figure in result["figures"]:
        print(figure)
    return result
