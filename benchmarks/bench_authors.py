"""authors: GetAuthor and ListAuthors (50 per page) directly, through Traefik, and raw.

Starts a private PostgreSQL and Redis, seeds the authors table, runs the service
(`python -m gatehouse_authors`, a subprocess) and a throwaway Traefik whose grpc
(h2c) entrypoint routes `/gatehouse.authors.v1.*` to it. Then, at one fixed
concurrency and in the same run:

- direct: gRPC calls to the service's own port;
- traefik: the same calls through Traefik's grpc entrypoint (the path the gateway takes);
- raw asyncpg: the same rows fetched with hand-written SQL over an asyncpg pool of
  the service's pool size, no gRPC and no SQLAlchemy: the floor the service stands on.

The gRPC calls come from ghz (benchmarks/ghz.py), a load generator in Go, not from a
Python grpc client in this process: on 2 cores such a client costs about as much CPU as
the server and competes with it, so the service would be charged for its client. The
raw asyncpg baseline is driven from this process, as the service itself drives asyncpg.
Each result says what drove each path (`load_generator`).

Target: the direct path reaches at least 40% of the raw asyncpg rate.
Run: `uv run python -m benchmarks authors`.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from benchmarks.common import Figure, Measurement, measure, write_result
from benchmarks.ghz import LOAD_GENERATOR, Target, run_ghz
from benchmarks.processes import grpc_answers, grpc_serving, python_module, traefik
from gatehouse_authors import migrate
from gatehouse_protos.authors.v1 import authors_pb2 as pb
from gatehouse_protos.authors.v1 import authors_pb2_grpc
from tests.harness.databases import create_database
from tests.harness.private import PrivatePostgres, PrivateRedis, free_port

ROWS = 5_000
PER_PAGE = 50
# Pages drawn from the first 20, so offsets stay within the first thousand rows.
PAGES = 20
CONCURRENCY = 16
DURATION = 8.0
POOL_SIZE = 10
PROTO = "gatehouse_protos/authors/v1/authors.proto"
SERVICE = "gatehouse.authors.v1.AuthorsService"

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


def _random_id() -> int:
    return random.randint(1, ROWS)


def _random_offset() -> int:
    return random.randrange(PAGES) * PER_PAGE


# Each workload: its gRPC method and the requests ghz sends in turn, in random order:
# every row once, and a thousand pages drawn as the raw baseline draws its offsets.
WORKLOADS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "GetAuthor": ("GetAuthor", [{"id": i} for i in random.sample(range(1, ROWS + 1), ROWS)]),
    f"ListAuthors({PER_PAGE})": (
        "ListAuthors",
        [
            {"offset": {"page": _random_offset() // PER_PAGE + 1, "per_page": PER_PAGE}}
            for _ in range(1000)
        ],
    ),
}


async def _routed(channel: grpc.aio.Channel) -> bool:
    # Health calls have no service in their path, so Traefik does not route them.
    await authors_pb2_grpc.AuthorsServiceStub(channel).GetAuthor(
        pb.GetAuthorRequest(id=1), timeout=1
    )
    return True


Call = Callable[[int], Awaitable[object]]


def _raw_calls(pool: asyncpg.Pool) -> tuple[Call, Call]:
    get_sql = "SELECT id, name, created_at, updated_at, version FROM authors WHERE id = $1"
    list_sql = (
        "SELECT id, name, created_at, updated_at, version FROM authors"
        " ORDER BY id LIMIT 50 OFFSET $1"
    )

    async def get(i: int) -> object:
        return await pool.fetchrow(get_sql, _random_id())

    async def list_page(i: int) -> object:
        return await pool.fetch(list_sql, _random_offset())

    return get, list_page


async def _measure_all(
    database_url: str, service_port: int, traefik_port: int, service_pid: int
) -> dict[tuple[str, str], Measurement]:
    """Each workload on the three paths back to back, so compared figures share conditions."""
    pool = await asyncpg.create_pool(database_url, min_size=POOL_SIZE, max_size=POOL_SIZE)
    raw_calls = _raw_calls(pool)
    addresses = {"direct": service_port, "via traefik": traefik_port}
    results: dict[tuple[str, str], Measurement] = {}
    try:
        for index, (workload, (method, data)) in enumerate(WORKLOADS.items()):
            for label, port in addresses.items():
                target = Target(f"127.0.0.1:{port}", PROTO, f"{SERVICE}/{method}")
                results[workload, label] = await run_ghz(
                    f"{workload} {label}",
                    target,
                    data,
                    concurrency=CONCURRENCY,
                    seconds=DURATION,
                    server_pid=service_pid,
                )
            results[workload, "raw asyncpg"] = await measure(
                f"{workload} raw asyncpg",
                raw_calls[index],
                concurrency=CONCURRENCY,
                duration=DURATION,
                own_cpu=True,
            )
    finally:
        await pool.close()
    return results


def _figure(name: str, direct: Measurement, raw: Measurement) -> Figure:
    return Figure(
        name=f"{name} direct",
        value=round(direct.rate, 1),
        unit="calls/s",
        baseline=f"{raw.name} (same rows, same pool size)",
        baseline_value=round(raw.rate, 1),
        target=">= 40% of the raw asyncpg rate, no failed calls",
        met=direct.rate >= 0.4 * raw.rate and not direct.errors,
    )


async def _seed(database_url: str) -> None:
    """ROWS authors in a freshly migrated table (a private server: nothing to clean up)."""
    await asyncio.to_thread(migrate.upgrade, database_url)
    conn = await asyncpg.connect(database_url)
    await conn.execute(
        "INSERT INTO authors (name) SELECT 'author ' || g FROM generate_series(1, $1) AS g", ROWS
    )
    await conn.execute("VACUUM ANALYZE authors")
    await conn.close()


async def run() -> dict[str, Any]:
    """Measure the three paths side by side and write results/authors.json."""
    postgres, redis = PrivatePostgres(), PrivateRedis()
    postgres.start()
    redis.start()
    try:
        database_url = await create_database(postgres.url, "authors_bench")
        await _seed(database_url)
        service_port, traefik_port = free_port(), free_port()
        env = {
            "AUTHORS_GRPC_PORT": str(service_port),
            "AUTHORS_METRICS_PORT": str(free_port()),
            "AUTHORS_DATABASE_URL": database_url,
            "AUTHORS_REDIS_URL": redis.url,
            "AUTHORS_POOL_SIZE": str(POOL_SIZE),
            "AUTHORS_MIGRATE_ON_START": "false",
        }
        with tempfile.TemporaryDirectory(prefix="gatehouse-bench-authors-") as workdir:
            async with (
                python_module(
                    "gatehouse_authors", env, grpc_serving(f"127.0.0.1:{service_port}")
                ) as service,
                traefik(
                    Path(workdir),
                    entrypoint="grpc",
                    port=traefik_port,
                    dynamic=DYNAMIC.format(port=service_port),
                    probe=grpc_answers(f"127.0.0.1:{traefik_port}", _routed),
                ),
            ):
                results = await _measure_all(database_url, service_port, traefik_port, service.pid)
    finally:
        redis.destroy()
        postgres.destroy()

    figures = [
        _figure(workload, results[workload, "direct"], results[workload, "raw asyncpg"])
        for workload in WORKLOADS
    ]
    result = write_result(
        "authors",
        figures,
        list(results.values()),
        command="uv run python -m benchmarks authors",
        load_generator={
            "direct": LOAD_GENERATOR,
            "via traefik": LOAD_GENERATOR,
            "raw asyncpg": "asyncpg from the benchmark process (benchmarks.common.measure)",
        },
        rows=ROWS,
        concurrency=CONCURRENCY,
        duration_seconds=DURATION,
    )
    for figure in figures:
        print(f"{figure.name}: {figure.value}/s, raw {figure.baseline_value}/s, met={figure.met}")
    return result
