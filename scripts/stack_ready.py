"""Wait until every process of the native stack answers, directly and through Traefik.

`scripts/run.sh` calls this after supervisord has started the programs. Each probe is
retried until it passes or the deadline expires; a probe that never passes is named
with its last error, and the exit status is 1.
Replica counts come from GATEWAY_REPLICAS, AUTHORS_REPLICAS, AUDIT_REPLICAS and
RATELIMIT_REPLICAS (default 1), ports from docs/architecture.md (replica k: port + 100*k);
Traefik's internal entrypoints on GATEHOUSE_INTERNAL_HOST (default 127.0.0.1, see
scripts/run.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from gatehouse_kit.readiness import Failure, Probe, grpc_serving, http_ok, wait_until

GRPC_SERVICES = {"authors": 7051, "audit": 7052, "ratelimit": 7053}
INTERNAL_HOST = os.environ.get("GATEHOUSE_INTERNAL_HOST", "127.0.0.1")
TRAEFIK_GRPC = f"{INTERNAL_HOST}:8081"


def replicas(process: str) -> int:
    """The replica count of a process, from <PROCESS>_REPLICAS."""
    return int(os.environ.get(f"{process.upper()}_REPLICAS", "1"))


def direct_probes() -> list[Probe]:
    """Every process on its own port."""
    found = [
        Probe("traefik", http_ok(f"http://{INTERNAL_HOST}:8083/ping")),
        Probe("keycloak", http_ok("http://127.0.0.1:9000/auth/health/ready")),
        Probe("prometheus", http_ok("http://127.0.0.1:9090/-/ready")),
        Probe("alertmanager", http_ok("http://127.0.0.1:9093/-/ready")),
        Probe("alert-receiver", http_ok("http://127.0.0.1:9095/health")),
        Probe("victoria-logs", http_ok("http://127.0.0.1:9428/health")),
        Probe("otelcol", http_ok("http://127.0.0.1:8888/metrics")),
        Probe("vmalert", http_ok("http://127.0.0.1:8880/health")),
        Probe("jaeger", http_ok("http://127.0.0.1:13133/status")),
    ]
    for k in range(replicas("gateway")):
        url = f"http://127.0.0.1:{8000 + 100 * k}/health/live"
        found.append(Probe(f"gateway-{k}", http_ok(url)))
    for name, port in GRPC_SERVICES.items():
        for k in range(replicas(name)):
            target = f"127.0.0.1:{port + 100 * k}"
            found.append(Probe(f"{name}-{k}", grpc_serving(target)))
    return found


def routed_probes() -> list[Probe]:
    """The public and internal routes through Traefik.

    Tried only once the processes answer, so that no early failure trips the circuit
    breaker in front of the gateway.
    """
    found = [
        Probe(f"{name} via :8081", grpc_serving(TRAEFIK_GRPC, authority=name))
        for name in GRPC_SERVICES
    ]
    found += [
        Probe("gateway via :8080", http_ok("http://127.0.0.1:8080/health/live")),
        Probe(
            "keycloak via :8080",
            http_ok("http://127.0.0.1:8080/auth/realms/gatehouse/.well-known/openid-configuration"),
        ),
    ]
    return found


async def main(seconds: float) -> int:
    """Wait for every probe; print what never became ready."""
    started = time.monotonic()
    deadline = started + seconds
    checked = 0
    failed: list[Failure] = []
    for phase in (direct_probes, routed_probes):
        batch = phase()
        checked += len(batch)
        failed = await wait_until(batch, deadline=deadline)
        if failed:
            break
    for failure in failed:
        print(f"not ready: {failure}", file=sys.stderr)
    if not failed:
        print(f"all {checked} readiness checks passed in {time.monotonic() - started:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait in all")
    sys.exit(asyncio.run(main(parser.parse_args().timeout)))
