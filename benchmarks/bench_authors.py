"""authors: GetAuthor and ListAuthors (50 per page) directly, through Traefik, and raw.

Starts a private PostgreSQL and Redis, seeds the authors table, runs the service
(`python -m gatehouse_authors`, a subprocess) and a throwaway Traefik whose grpc
(h2c) entrypoint routes `/gatehouse.authors.v1.*` to it. Then, at one fixed
concurrency and in the same run:

- direct: gRPC calls to the service's own port;
- traefik: the same calls through Traefik's grpc entrypoint (the path the gateway takes);
- raw asyncpg: the same rows fetched with hand-written SQL over an asyncpg pool of
  the service's pool size, no gRPC and no SQLAlchemy: the floor the service stands on.

Target: the direct path reaches at least 40% of the raw asyncpg rate.
Run: `uv run python -m benchmarks authors`.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.common import Figure, Measurement, measure, write_result
from gatehouse_authors import migrate
from gatehouse_kit.grpc_client import open_channel
from gatehouse_protos.authors.v1 import authors_pb2 as pb
from gatehouse_protos.authors.v1 import authors_pb2_grpc
from gatehouse_protos.common.v1 import pagination_pb2 as page_pb
from tests.harness.databases import create_database
from tests.harness.private import PrivatePostgres, PrivateRedis, free_port

REPO = Path(__file__).resolve().parents[1]
ROWS = 5_000
PER_PAGE = 50
# Pages drawn from the first 20, so offsets stay within the first thousand rows.
PAGES = 20
CONCURRENCY = 16
DURATION = 8.0
POOL_SIZE = 10

STATIC = """\
entryPoints:
  grpc:
    address: "127.0.0.1:{port}"
providers:
  file:
    filename: "{dynamic}"
log:
  level: ERROR
"""
DYNAMIC = """\
http:
  routers:
    authors:
      entryPoints: [grpc]
      rule: "PathPrefix(`/gatehouse.authors.v1.`)"
      service: authors
  services:
    authors:
      loadBalancer:
        servers:
          - url: "h2c://127.0.0.1:{port}"
"""


async def _until_serving(target: str, process: Any, what: str) -> None:
    channel = open_channel(target, "authors", max_attempts=1)
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        for _ in range(300):
            if process.returncode is not None:
                raise RuntimeError(f"{what} exited with {process.returncode}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{what} did not start serving")
    finally:
        await channel.close()


async def start_service(
    database_url: str, redis_url: str
) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    env = {
        **os.environ,
        "AUTHORS_GRPC_PORT": str(port),
        "AUTHORS_METRICS_PORT": str(free_port()),
        "AUTHORS_DATABASE_URL": database_url,
        "AUTHORS_REDIS_URL": redis_url,
        "AUTHORS_POOL_SIZE": str(POOL_SIZE),
        "AUTHORS_MIGRATE_ON_START": "false",
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatehouse_authors", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    await _until_serving(f"127.0.0.1:{port}", process, "authors service")
    return process, port


async def start_traefik(service_port: int, workdir: Path) -> tuple[asyncio.subprocess.Process, int]:
    installer = await asyncio.create_subprocess_exec(
        "bash", str(REPO / "scripts" / "install-traefik.sh"), stdout=asyncio.subprocess.PIPE
    )
    output, _ = await installer.communicate()
    if installer.returncode != 0:
        raise RuntimeError("scripts/install-traefik.sh failed")
    binary = output.decode().strip().splitlines()[-1]
    port = free_port()
    dynamic = workdir / "dynamic.yml"
    dynamic.write_text(DYNAMIC.format(port=service_port))
    static = workdir / "traefik.yml"
    static.write_text(STATIC.format(port=port, dynamic=dynamic))
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--configFile={static}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    # Health calls have no service in their path: wait on a routed call instead.
    channel = open_channel(f"127.0.0.1:{port}", "authors", max_attempts=1)
    stub = authors_pb2_grpc.AuthorsServiceStub(channel)
    try:
        for _ in range(300):
            if process.returncode is not None:
                raise RuntimeError(f"traefik exited with {process.returncode}")
            try:
                await stub.GetAuthor(pb.GetAuthorRequest(id=1), timeout=1)
                return process, port
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        raise RuntimeError("traefik did not route to the authors service")
    finally:
        await channel.close()


def _random_id(i: int) -> int:
    return random.randint(1, ROWS)


def _random_offset(i: int) -> int:
    return random.randrange(PAGES) * PER_PAGE


Call = Callable[[int], Awaitable[object]]
WORKLOADS = ("GetAuthor", f"ListAuthors({PER_PAGE})")


def _grpc_calls(channel: grpc.aio.Channel) -> tuple[Call, Call]:
    stub = authors_pb2_grpc.AuthorsServiceStub(channel)

    async def get(i: int) -> object:
        return await stub.GetAuthor(pb.GetAuthorRequest(id=_random_id(i)), timeout=5)

    async def list_page(i: int) -> object:
        page = page_pb.OffsetPage(page=_random_offset(i) // PER_PAGE + 1, per_page=PER_PAGE)
        return await stub.ListAuthors(pb.ListAuthorsRequest(offset=page), timeout=5)

    return get, list_page


def _raw_calls(pool: asyncpg.Pool) -> tuple[Call, Call]:
    get_sql = "SELECT id, name, created_at, updated_at, version FROM authors WHERE id = $1"
    list_sql = (
        "SELECT id, name, created_at, updated_at, version FROM authors"
        " ORDER BY id LIMIT 50 OFFSET $1"
    )

    async def get(i: int) -> object:
        return await pool.fetchrow(get_sql, _random_id(i))

    async def list_page(i: int) -> object:
        return await pool.fetch(list_sql, _random_offset(i))

    return get, list_page


async def _measure_all(
    database_url: str, service_port: int, traefik_port: int
) -> dict[tuple[str, str], Measurement]:
    """Each workload on the three paths back to back, so compared figures share conditions."""
    direct = open_channel(f"127.0.0.1:{service_port}", "authors", max_attempts=1)
    proxied = open_channel(f"127.0.0.1:{traefik_port}", "authors", max_attempts=1)
    pool = await asyncpg.create_pool(database_url, min_size=POOL_SIZE, max_size=POOL_SIZE)
    paths = [
        ("direct", _grpc_calls(direct)),
        ("via traefik", _grpc_calls(proxied)),
        ("raw asyncpg", _raw_calls(pool)),
    ]
    results: dict[tuple[str, str], Measurement] = {}
    try:
        for index, workload in enumerate(WORKLOADS):
            for label, calls in paths:
                results[workload, label] = await measure(
                    f"{workload} {label}", calls[index], concurrency=CONCURRENCY, duration=DURATION
                )
    finally:
        await direct.close()
        await proxied.close()
        await pool.close()
    return results


def _figure(name: str, direct: Measurement, raw: Measurement) -> Figure:
    return Figure(
        name=f"{name} direct",
        value=round(direct.rate, 1),
        unit="calls/s",
        baseline=f"{raw.name} (same rows, same pool size)",
        baseline_value=round(raw.rate, 1),
        target=">= 40% of the raw asyncpg rate",
        met=direct.rate >= 0.4 * raw.rate,
    )


async def run() -> dict[str, Any]:
    """Measure the three paths side by side and write results/authors.json."""
    postgres, redis = PrivatePostgres(), PrivateRedis()
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-authors-"))
    processes: list[asyncio.subprocess.Process] = []
    postgres.start()
    redis.start()
    try:
        database_url = await create_database(postgres.url, "authors_bench")
        await asyncio.to_thread(migrate.upgrade, database_url)
        conn = await asyncpg.connect(database_url)
        await conn.execute(
            "INSERT INTO authors (name) SELECT 'author ' || g FROM generate_series(1, $1) AS g",
            ROWS,
        )
        await conn.execute("VACUUM ANALYZE authors")
        await conn.close()

        service, service_port = await start_service(database_url, redis.url)
        processes.append(service)
        traefik, traefik_port = await start_traefik(service_port, workdir)
        processes.append(traefik)

        results = await _measure_all(database_url, service_port, traefik_port)
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
                await process.wait()
        redis.destroy()
        postgres.destroy()
        shutil.rmtree(workdir, ignore_errors=True)

    figures = [
        _figure(workload, results[workload, "direct"], results[workload, "raw asyncpg"])
        for workload in WORKLOADS
    ]
    result = write_result(
        "authors",
        figures,
        list(results.values()),
        command="uv run python -m benchmarks authors",
        rows=ROWS,
        concurrency=CONCURRENCY,
        duration_seconds=DURATION,
    )
    for figure in figures:
        print(f"{figure.name}: {figure.value}/s, raw {figure.baseline_value}/s, met={figure.met}")
    return result
