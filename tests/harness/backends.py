"""How tests reach real PostgreSQL and Redis.

In order: URLs given in the environment (`GATEHOUSE_TEST_POSTGRES_URL`,
`GATEHOUSE_TEST_REDIS_URL`); containers started by testcontainers when
`GATEHOUSE_TEST_BACKENDS=testcontainers` (a Docker engine must answer; the images are
those docker-compose.yml runs, see tests/harness/containers.py); else (the default,
`GATEHOUSE_TEST_BACKENDS=native`) the native processes that scripts/postgres.sh and
scripts/redis.sh install and start.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NATIVE_POSTGRES_URL = "postgresql://gatehouse:gatehouse@127.0.0.1:5432/postgres"
NATIVE_REDIS_URL = "redis://127.0.0.1:6379/0"


BACKEND_MODES = ("native", "testcontainers")


def chosen_mode(variable: str, modes: tuple[str, ...]) -> str:
    """The mode the environment `variable` names, the first of `modes` by default;
    ValueError for any other."""
    mode = os.environ.get(variable, modes[0])
    if mode not in modes:
        raise ValueError(f"{variable}={mode!r}: expected one of {modes}")
    return mode


def backends_mode() -> str:
    """`GATEHOUSE_TEST_BACKENDS`: `native` (default) or `testcontainers`."""
    return chosen_mode("GATEHOUSE_TEST_BACKENDS", BACKEND_MODES)


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
    elif backends_mode() == "testcontainers":
        from testcontainers.community.postgres import PostgresContainer

        from tests.harness import containers

        pg = PostgresContainer(containers.service_image("postgres"), driver=None)
        with containers.started(pg):
            yield Backend(pg.get_connection_url())
    else:
        run_script("postgres.sh", "start")
        yield Backend(NATIVE_POSTGRES_URL, native_script="postgres.sh")


@contextlib.contextmanager
def redis_backend() -> Iterator[Backend]:
    """A Redis URL for the test session."""
    if url := os.environ.get("GATEHOUSE_TEST_REDIS_URL"):
        yield Backend(url)
    elif backends_mode() == "testcontainers":
        from testcontainers.community.redis import RedisContainer

        from tests.harness import containers

        redis = RedisContainer(containers.service_image("redis"))
        with containers.started(redis):
            host = redis.get_container_host_ip()
            port = redis.get_exposed_port(6379)
            yield Backend(f"redis://{host}:{port}/0")
    else:
        run_script("redis.sh", "start")
        yield Backend(NATIVE_REDIS_URL, native_script="redis.sh")
