"""ratelimit: decisions through gRPC beside raw EVALSHA of the same script, in one run.

Starts a private Redis and the service (`python -m gatehouse_ratelimit`, a subprocess)
with rules generous enough that every decision is admitted, so each call does the same
work: an HTTP-like decision over two descriptors (user and client address).

- peak: closed-loop decisions per second through gRPC, and raw EVALSHA of the sliding
  window script from redis-py with the same keys and arguments;
- Redis round trips per decision: commands the service sent (MONITOR) over a batch;
- p99 at half of the gRPC peak: an open loop that sends at a fixed rate whatever is
  still in flight, so queueing shows in the latencies rather than slowing the sender;
- for context, the same gRPC server bootstrap answering a constant (no Redis, no rules):
  the rate that the Python gRPC stack itself allows on this machine.

The gRPC load (peak, half of peak, constant reply) comes from ghz (benchmarks/ghz.py),
a load generator in Go, not from a Python grpc client in this process: on 2 cores such
a client costs about as much CPU as the server it drives, and the service would be
charged for it. The raw EVALSHA baseline stays redis-py in this process, as the service
itself calls Redis with redis-py; the round-trip count uses a sequential Python client,
which only has to be correct, not fast. The result names what drove each workload
(`load_generator`).

Run: `uv run python -m benchmarks ratelimit`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from google.protobuf.json_format import MessageToDict

from benchmarks.common import Figure, measure, percentile, write_result
from benchmarks.ghz import LOAD_GENERATOR, Target, run_ghz
from benchmarks.processes import child, grpc_serving, python_module
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
PROTO = "gatehouse_protos/ratelimit/v1/ratelimit.proto"
CALL = "gatehouse.ratelimit.v1.RateLimitService/ShouldRateLimit"
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


# decision_request(i) for one whole cycle of users and addresses, as ghz sends them in turn.
DECISIONS = [MessageToDict(decision_request(i)) for i in range(USERS)]


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


def raw_decision(i: int) -> tuple[list[str], list[str | int]]:
    """The keys and arguments of the service's script deciding call `i` of the raw
    baseline: two descriptors (user and address), one hit, as ShouldRateLimit asks."""
    base = f"raw:{i % USERS}"
    keys = [f"{base}:u:log", f"{base}:u:sum", f"{base}:ip:log", f"{base}:ip:sum"]
    # Per descriptor: limit, window, shadow, hits, hold, member to give back from, returned.
    limit: list[str | int] = [1_000_000, HOUR_US, "0", 1, 0, "", 0]
    return keys, ["", f"raw{i}", "decide", 1, *limit, *limit]


async def run() -> dict[str, Any]:
    """Measure, print and write benchmarks/results/ratelimit.json."""
    server = PrivateRedis()
    server.start()
    client = redis.Redis.from_url(server.url)
    port, floor_port = free_port(), free_port()
    decision = Target(f"127.0.0.1:{port}", PROTO, CALL)
    floor_target = Target(f"127.0.0.1:{floor_port}", PROTO, CALL)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ratelimit-") as workdir:
            rules = Path(workdir) / "rules.yaml"
            rules.write_text(RULES)
            env = {
                "RATELIMIT_GRPC_PORT": str(port),
                "RATELIMIT_METRICS_PORT": str(free_port()),
                "RATELIMIT_REDIS_URL": server.url,
                "RATELIMIT_RULES_PATH": str(rules),
                "RATELIMIT_FAIL_MODE": "closed",
                "LOG_LEVEL": "ERROR",
            }
            floor_argv = [sys.executable, "-c", FLOOR_SERVER, str(floor_port)]
            async with (
                python_module(
                    "gatehouse_ratelimit", env, grpc_serving(decision.address)
                ) as service,
                child(
                    floor_argv, probe=grpc_serving(floor_target.address), what="constant server"
                ) as floor_server,
            ):
                script = client.register_script(SLIDING_WINDOW_LUA)

                async def raw_evalsha(i: int) -> object:
                    keys, args = raw_decision(i)
                    return await script(keys=keys, args=args)

                raw = await measure(
                    "raw_evalsha",
                    raw_evalsha,
                    concurrency=CONCURRENCY,
                    duration=DURATION,
                    own_cpu=True,
                )
                # Fail-closed answers (Redis slower than the service's timeout) are errors.
                peak = await run_ghz(
                    "grpc_peak",
                    decision,
                    DECISIONS,
                    concurrency=CONCURRENCY,
                    seconds=DURATION,
                    server_pid=service.pid,
                )
                floor = await run_ghz(
                    "grpc_floor_constant_reply",
                    floor_target,
                    DECISIONS,
                    concurrency=CONCURRENCY,
                    seconds=DURATION,
                    server_pid=floor_server.pid,
                )
                channel = open_channel(decision.address, max_attempts=1)
                try:
                    stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
                    trips, commands = await round_trips_per_decision(client, stub)
                finally:
                    await channel.close()
                half_rate = peak.rate / 2
                half = await run_ghz(
                    f"grpc_open_loop_{half_rate:.0f}_per_s",
                    decision,
                    DECISIONS,
                    concurrency=CONCURRENCY,
                    seconds=OPEN_LOOP_SECONDS,
                    rps=half_rate,
                    server_pid=service.pid,
                )
    finally:
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
            ">= 0.30, no failed calls",
            ratio >= 0.30 and not peak.errors,
        ),
        Figure(
            "p99 at half of the gRPC peak",
            round(p99, 3),
            "ms",
            "gRPC peak (decisions per second)",
            round(peak.rate, 1),
            "< 5 ms, no failed calls",
            p99 < 5.0 and not half.errors,
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
        load_generator={
            "raw_evalsha": "redis-py from the benchmark process (benchmarks.common.measure)",
            "grpc_peak": LOAD_GENERATOR,
            half.name: f"{LOAD_GENERATOR}, open loop (--rps, --async)",
            "grpc_floor_constant_reply": LOAD_GENERATOR,
            "round trips": "sequential grpc.aio client from the benchmark process",
        },
        redis_commands_per_batch=commands,
        grpc_errors={m.name: m.errors for m in (peak, half, floor)},
        concurrency=CONCURRENCY,
    )
    for figure in result["figures"]:
        print(figure)
    return result
