"""Wait until every process of the native stack answers, directly and through Traefik.

`scripts/run.sh` calls this after supervisord has started the programs. Each probe is
retried until it passes or the deadline expires; a probe that never passes is named
with its last error, and the exit status is 1.
Replica counts come from GATEWAY_REPLICAS, AUTHORS_REPLICAS, AUDIT_REPLICAS and
RATELIMIT_REPLICAS (default 1), ports from docs/architecture.md (replica k: port + 100*k).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

GRPC_SERVICES = {"authors": 50051, "audit": 50052, "ratelimit": 50053}
TRAEFIK_GRPC = "127.0.0.1:8081"


@dataclass
class Probe:
    """One readiness check: a name to report and a coroutine that raises until ready."""

    name: str
    check: Callable[[], Awaitable[None]]


def replicas(process: str) -> int:
    """The replica count of a process, from <PROCESS>_REPLICAS."""
    return int(os.environ.get(f"{process.upper()}_REPLICAS", "1"))


def http_ok(client: httpx.AsyncClient, url: str) -> Callable[[], Awaitable[None]]:
    """A check that passes when `url` answers 200."""

    async def check() -> None:
        response = await client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")

    return check


def grpc_serving(target: str, authority: str | None) -> Callable[[], Awaitable[None]]:
    """A check that passes when grpc.health.v1 at `target` answers SERVING."""

    async def check() -> None:
        options = [("grpc.default_authority", authority)] if authority else []
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    return check


def direct_probes(client: httpx.AsyncClient) -> list[Probe]:
    """Every process on its own port."""
    found = [
        Probe("traefik", http_ok(client, "http://127.0.0.1:8083/ping")),
        Probe("keycloak", http_ok(client, "http://127.0.0.1:9000/auth/health/ready")),
        Probe("prometheus", http_ok(client, "http://127.0.0.1:9090/-/ready")),
    ]
    for k in range(replicas("gateway")):
        url = f"http://127.0.0.1:{8000 + 100 * k}/health/live"
        found.append(Probe(f"gateway-{k}", http_ok(client, url)))
    for name, port in GRPC_SERVICES.items():
        for k in range(replicas(name)):
            target = f"127.0.0.1:{port + 100 * k}"
            found.append(Probe(f"{name}-{k}", grpc_serving(target, None)))
    return found


def routed_probes(client: httpx.AsyncClient) -> list[Probe]:
    """The public and internal routes through Traefik.

    Tried only once the processes answer, so that no early failure trips the circuit
    breaker in front of the gateway.
    """
    found = [Probe(f"{name} via :8081", grpc_serving(TRAEFIK_GRPC, name)) for name in GRPC_SERVICES]
    found += [
        Probe("gateway via :8080", http_ok(client, "http://127.0.0.1:8080/health/live")),
        Probe(
            "keycloak via :8080",
            http_ok(
                client,
                "http://127.0.0.1:8080/auth/realms/gatehouse/.well-known/openid-configuration",
            ),
        ),
    ]
    return found


async def wait_for(probe: Probe, deadline: float) -> str | None:
    """Retry `probe` until it passes (None) or the deadline passes (its last error)."""
    error = "not tried"
    while time.monotonic() < deadline:
        try:
            await probe.check()
        except Exception as exc:  # any failure means "not ready yet"
            error = f"{type(exc).__name__}: {exc}"[:200]
            await asyncio.sleep(0.25)
        else:
            return None
    return error


async def main(seconds: float) -> int:
    """Wait for every probe; print what never became ready."""
    started = time.monotonic()
    deadline = started + seconds
    checks: list[Probe] = []
    failed: list[tuple[str, str]] = []
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        for phase in (direct_probes, routed_probes):
            batch = phase(client)
            checks += batch
            errors = await asyncio.gather(*(wait_for(p, deadline) for p in batch))
            failed = [(p.name, e) for p, e in zip(batch, errors, strict=True) if e is not None]
            if failed:
                break
    for name, error in failed:
        print(f"not ready: {name}: {error}", file=sys.stderr)
    if not failed:
        print(f"all {len(checks)} readiness checks passed in {time.monotonic() - started:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait in all")
    sys.exit(asyncio.run(main(parser.parse_args().timeout)))
