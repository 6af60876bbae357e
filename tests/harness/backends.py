"""How tests reach real PostgreSQL and Redis.

In order: URLs given in the environment (`GATEHOUSE_TEST_POSTGRES_URL`,
`GATEHOUSE_TEST_REDIS_URL`); testcontainers when a Docker engine answers; else the
native processes that scripts/postgres.sh and scripts/redis.sh install and start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NATIVE_POSTGRES_URL = "postgresql://gatehouse:gatehouse@127.0.0.1:5432/postgres"
NATIVE_REDIS_URL = "redis://127.0.0.1:6379/0"


def docker_answers() -> bool:
    """True when a Docker engine (not just the client) is reachable."""
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        timeout=15,
        check=False,
    )
    return probe.returncode == 0


def run_script(name: str, *args: str) -> None:
    """Run one of scripts/*.sh, failing the test session loudly if it fails."""
    subprocess.run(["bash", str(REPO / "scripts" / name), *args], check=True, timeout=600)


@dataclass(frozen=True)
class Backend:
    """A reachable server and, for native processes, how to stop and start it again."""

    url: str
    native_script: str | None = None

    def stop(self) -> None:
        """Stop the server (chaos and outage tests); only for native processes."""
        if self.native_script is None:
            raise RuntimeError("only a native backend can be stopped by the tests")
        run_script(self.native_script, "stop")

    def start(self) -> None:
        if self.native_script is None:
            raise RuntimeError("only a native backend can be started by the tests")
        run_script(self.native_script, "start")


@contextlib.contextmanager
def postgres_backend() -> Iterator[Backend]:
    """A PostgreSQL superuser URL (database `postgres`) for the test session."""
    if url := os.environ.get("GATEHOUSE_TEST_POSTGRES_URL"):
        yield Backend(url)
    elif docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as pg:
            yield Backend(pg.get_connection_url())
    else:
        run_script("postgres.sh", "start")
        yield Backend(NATIVE_POSTGRES_URL, native_script="postgres.sh")


@contextlib.contextmanager
def redis_backend() -> Iterator[Backend]:
    """A Redis URL for the test session."""
    if url := os.environ.get("GATEHOUSE_TEST_REDIS_URL"):
        yield Backend(url)
    elif docker_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield Backend(f"redis://{host}:{port}/0")
    else:
        run_script("redis.sh", "start")
        yield Backend(NATIVE_REDIS_URL, native_script="redis.sh")
