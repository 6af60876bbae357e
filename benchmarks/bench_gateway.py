"""gateway HTTP: GET /authors/{id} on the full path beside a trivial FastAPI route, both
behind the same throwaway Traefik in the same run.

Needs the platform (`bash scripts/run.sh up -d`; started here when it is not running, and
then stopped again at the end):
Keycloak issues a real token of the realm's `admin`, and the authors and audit services
answer behind the platform's Traefik grpc entrypoint, as they do for its own gateway.

The gateway measured is a process of its own (`python -m gatehouse_gateway`, the
platform's settings, one uvicorn worker) rather than the platform's replicas: those
enforce the shipped rate limits (1000 requests a minute for admin), which a benchmark
would exhaust in seconds, and would share them with everyone else on the machine. Ours
asks a ratelimit service of its own (its own Redis) whose rules are the shipped ones,
same descriptors, with every limit multiplied by LIMIT_FACTOR: every request still pays
for its rate-limit decision, none is refused. Everything else is the real path: Traefik,
RS256 verification against Keycloak's JWKS, the rate-limit call, GetAuthor over gRPC
through Traefik, the audit event.

The baseline is `trivial_app` below, a FastAPI route returning a constant author, under
the same uvicorn settings as the gateway (one worker, no access log, no proxy headers).
Both routes pass through the same Traefik with the same (empty) middleware chain; the
load generator is httpx in this process, at CONCURRENCY, for DURATION seconds each.

Target: the full path reaches at least 35% of the trivial route's requests per second.
Run: `uv run python -m benchmarks gateway`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from fastapi import FastAPI

from benchmarks.common import Figure, Measurement, measure, write_result
from benchmarks.processes import REPO, child, grpc_serving, http_answers, python_module, traefik
from tests.harness.private import PrivateRedis, free_port
from tests.harness.stack import local_stack, native_running

BUDGET_SECONDS = 120.0
CONCURRENCY = 16
DURATION = 10.0
WARMUP = 2.0
TARGET_SHARE = 0.35
LIMIT_FACTOR = 1000

DYNAMIC = """\
http:
  routers:
    gateway:
      entryPoints: [web]
      rule: "PathPrefix(`/authors`)"
      service: gateway
    trivial:
      entryPoints: [web]
      rule: "PathPrefix(`/trivial`)"
      service: trivial
  services:
    gateway:
      loadBalancer:
        servers:
          - url: "http://127.0.0.1:{gateway}"
    trivial:
      loadBalancer:
        servers:
          - url: "http://127.0.0.1:{trivial}"
"""

trivial_app = FastAPI()


@trivial_app.get("/trivial/{author_id}")
async def _trivial(author_id: int) -> dict[str, Any]:
    """The baseline: an author-shaped answer with no I/O at all."""
    return {
        "id": author_id,
        "name": "trivial",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }


def serve_trivial(port: int) -> None:
    """Serve `trivial_app` as the gateway serves itself (gatehouse_gateway.__main__)."""
    config = uvicorn.Config(
        trivial_app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
    uvicorn.Server(config).run()


def raised_limits(rules: dict[str, Any]) -> dict[str, Any]:
    """The shipped rate-limit rules with every per-unit limit LIMIT_FACTOR times higher."""
    for domain in rules["domains"].values():
        for descriptor in domain.get("descriptors", []):
            for limit in descriptor["limits"].values():
                limit["requests_per_unit"] *= LIMIT_FACTOR
    return rules


def _run_sh(*argv: str) -> None:
    subprocess.run(
        ["bash", str(REPO / "scripts" / "run.sh"), *argv],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=900,
    )


async def run() -> dict[str, Any]:
    """Measure both routes through one Traefik and write results/gateway.json.

    A platform this benchmark started is stopped again at the end, so that the
    benchmarks after it do not share the machine with it."""
    was_running = await asyncio.to_thread(native_running)
    await asyncio.to_thread(_run_sh, "up", "-d")
    try:
        return await _run_on_platform()
    finally:
        if not was_running:
            await asyncio.to_thread(_run_sh, "down")


async def _run_on_platform() -> dict[str, Any]:
    platform = local_stack(native=True)
    token = await asyncio.to_thread(platform.token, "admin")
    ports = {name: free_port() for name in ("web", "gateway", "trivial", "rl", "rl_m", "gw_m")}
    redis = PrivateRedis()
    redis.start()
    async with AsyncExitStack() as stack:
        stack.callback(redis.destroy)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        rules = workdir / "rules.yaml"
        shipped = yaml.safe_load((REPO / "deploy/ratelimit/rules.yaml").read_text())
        rules.write_text(yaml.safe_dump(raised_limits(shipped)))
        ratelimit_env = {
            "RATELIMIT_GRPC_PORT": str(ports["rl"]),
            "RATELIMIT_METRICS_PORT": str(ports["rl_m"]),
            "RATELIMIT_REDIS_URL": redis.url,
            "RATELIMIT_RULES_PATH": str(rules),
        }
        ratelimit_ready = grpc_serving(f"127.0.0.1:{ports['rl']}")
        await stack.enter_async_context(
            python_module("gatehouse_ratelimit", ratelimit_env, ratelimit_ready)
        )
        gateway_env = {
            "GATEWAY_HTTP_PORT": str(ports["gateway"]),
            "GATEWAY_METRICS_PORT": str(ports["gw_m"]),
            "GATEWAY_RATELIMIT_TARGET": f"127.0.0.1:{ports['rl']}",
            "GATEWAY_RATELIMIT_AUTHORITY": "",
        }
        gateway_ready = http_answers(f"http://127.0.0.1:{ports['gateway']}/health/ready")
        await stack.enter_async_context(
            python_module("gatehouse_gateway", gateway_env, gateway_ready)
        )
        trivial = [sys.executable, "-m", "benchmarks.bench_gateway", str(ports["trivial"])]
        trivial_ready = http_answers(f"http://127.0.0.1:{ports['trivial']}/trivial/1")
        await stack.enter_async_context(child(trivial, probe=trivial_ready, what="trivial app"))
        web = f"http://127.0.0.1:{ports['web']}"
        await stack.enter_async_context(
            traefik(
                workdir,
                entrypoint="web",
                port=ports["web"],
                dynamic=DYNAMIC.format(gateway=ports["gateway"], trivial=ports["trivial"]),
                probe=http_answers(f"{web}/trivial/1"),
            )
        )
        measurements = await _measure(web, token)
    full, baseline = measurements
    share = full.rate / baseline.rate if baseline.rate else 0.0
    figure = Figure(
        name="GET /authors/{id} through Traefik, real token (full path)",
        value=round(full.rate, 1),
        unit="requests/s",
        baseline="trivial FastAPI route behind the same Traefik",
        baseline_value=round(baseline.rate, 1),
        target=f">= {TARGET_SHARE:.0%} of the baseline",
        met=share >= TARGET_SHARE,
    )
    result = write_result(
        "gateway",
        [figure],
        measurements,
        share_of_baseline=round(share, 3),
        concurrency=CONCURRENCY,
        command="uv run python -m benchmarks gateway",
    )
    print(f"full path {full.rate:.0f}/s, trivial {baseline.rate:.0f}/s: {share:.0%}")
    return result


async def _measure(web: str, token: str) -> list[Measurement]:
    """Both routes at the same concurrency over one keep-alive connection pool."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=web, limits=limits, timeout=10) as client:
        created = await client.post("/authors", json={"name": "bench-gateway"}, headers=headers)
        if created.status_code == 409:
            listed = await client.get("/authors?name=bench-gateway", headers=headers)
            author_id = listed.json()[0]["id"]
        else:
            if created.is_error:
                # Whoever answered (Traefik or the gateway) says why in the body.
                raise RuntimeError(
                    f"POST /authors answered {created.status_code}: {created.text[:300]}"
                )
            author_id = created.json()["id"]

        async def full(_: int) -> None:
            response = await client.get(f"/authors/{author_id}", headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"full path answered {response.status_code}: {response.text}")

        async def trivial(_: int) -> None:
            response = await client.get(f"/trivial/{author_id}", headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"trivial route answered {response.status_code}")

        return [
            await measure(
                "GET /authors/{id} full path",
                full,
                concurrency=CONCURRENCY,
                duration=DURATION,
                warmup=WARMUP,
            ),
            await measure(
                "GET trivial route",
                trivial,
                concurrency=CONCURRENCY,
                duration=DURATION,
                warmup=WARMUP,
            ),
        ]


if __name__ == "__main__":
    serve_trivial(int(sys.argv[1]))
