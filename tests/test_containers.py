"""The container paths of the harness on a real Docker engine, and how they fail without.

`GATEHOUSE_TEST_STACK` and `GATEHOUSE_TEST_BACKENDS` choose the compose stack and the
testcontainers backends explicitly: a Docker engine that merely answers changes nothing.
The images are those docker-compose.yml runs here (`make images`); the PostgreSQL one
keeps the upstream image's contract whichever was had; testcontainers leaves no
container behind, reaper or not.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from testcontainers.community.postgres import PostgresContainer
from testcontainers.core.config import testcontainers_config

from tests.harness import containers
from tests.harness.backends import backends_mode, postgres_backend, redis_backend
from tests.harness.stack import compose_stack, stack_mode


@pytest.fixture
def testcontainers_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEHOUSE_TEST_POSTGRES_URL", raising=False)
    monkeypatch.delenv("GATEHOUSE_TEST_REDIS_URL", raising=False)
    monkeypatch.setenv("GATEHOUSE_TEST_BACKENDS", "testcontainers")


def exists(container_id: str) -> bool:
    inspected = subprocess.run(
        ["docker", "container", "inspect", container_id], capture_output=True, check=False
    )
    return inspected.returncode == 0


def test_the_native_paths_are_the_default_whatever_engine_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEHOUSE_TEST_STACK", raising=False)
    monkeypatch.delenv("GATEHOUSE_TEST_BACKENDS", raising=False)
    assert (stack_mode(), backends_mode()) == ("native", "native")


@pytest.mark.parametrize("variable", ["GATEHOUSE_TEST_STACK", "GATEHOUSE_TEST_BACKENDS"])
def test_an_unknown_mode_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "kubernetes")
    with pytest.raises(ValueError, match=f"{variable}='kubernetes'"):
        stack_mode() if variable == "GATEHOUSE_TEST_STACK" else backends_mode()


def test_compose_without_its_cli_plugin_fails_with_its_own_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No plugin: the start's error names it, and the teardown's failure does not hide it."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with pytest.raises(RuntimeError) as failed, compose_stack():
        pytest.fail("the compose stack started without the Compose CLI plugin")
    message = str(failed.value)
    assert message.startswith("scripts/compose.sh up failed (exit 1):"), message
    first = message.splitlines()[1]
    assert "the Compose v2 CLI is not installed as a Docker CLI plugin" in first, message
    assert "unknown shorthand flag" not in message


def test_testcontainers_backends_use_the_compose_images_and_leave_nothing(
    testcontainers_backends: None,
) -> None:
    before = set(containers.session_containers())
    with postgres_backend() as pg, redis_backend() as rd:
        started = set(containers.session_containers()) - before
        images = {
            subprocess.run(
                ["docker", "inspect", "--format", "{{.Config.Image}}", cid],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            for cid in started
        }
        assert {containers.service_image("postgres"), containers.service_image("redis")} <= images
        assert pg.url.startswith("postgresql://")
        assert rd.url.startswith("redis://")
    assert started
    assert [cid for cid in started if exists(cid)] == []


def test_the_reaper_is_disabled_only_where_its_image_cannot_be_had(
    testcontainers_backends: None,
) -> None:
    with postgres_backend():
        pass
    reaper = testcontainers_config.ryuk_image
    assert testcontainers_config.ryuk_disabled == (not containers.image_available(reaper))


async def test_the_redis_image_answers_from_another_host(testcontainers_backends: None) -> None:
    """Reached through a published port, i.e. not from loopback: no protected mode."""
    with redis_backend() as rd:
        client = aioredis.from_url(rd.url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()


@pytest.fixture
def initdb(tmp_path: Path) -> Path:
    scripts = tmp_path / "initdb"
    scripts.mkdir()
    (scripts / "10-table.sql").write_text("CREATE TABLE made_by_initdb (id int);\n")
    (scripts / "20-database.sh").write_text(
        'psql -v ON_ERROR_STOP=1 -c "CREATE DATABASE made_by_script"\n'
    )
    for path in (scripts, *scripts.iterdir()):
        path.chmod(0o755)
    return scripts


async def test_the_postgres_image_keeps_the_upstream_contract(
    testcontainers_backends: None, initdb: Path
) -> None:
    """POSTGRES_USER/PASSWORD/DB, /docker-entrypoint-initdb.d, pg_isready, password over TCP."""
    password = uuid.uuid4().hex
    pg = PostgresContainer(
        containers.service_image("postgres"),
        username="owner",
        password=password,
        dbname="appdb",
        driver=None,
    ).with_volume_mapping(str(initdb), "/docker-entrypoint-initdb.d", "ro")
    with containers.started(pg):
        ready = pg.exec(["pg_isready", "-U", "owner", "-d", "appdb"])
        assert ready.exit_code == 0, ready.output
        conn = await asyncpg.connect(pg.get_connection_url())
        try:
            assert await conn.fetchval("SELECT current_user") == "owner"
            assert await conn.fetchval("SELECT to_regclass('made_by_initdb')") == "made_by_initdb"
            databases = await conn.fetch("SELECT datname FROM pg_database")
            assert {"appdb", "made_by_script"} <= {row["datname"] for row in databases}
        finally:
            await conn.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(pg.get_connection_url().replace(password, "wrong"))


def test_an_image_built_on_the_base_made_here_trusts_the_machines_extra_authorities() -> None:
    """Behind an HTTPS proxy that re-signs traffic, builds in the images need its authority.

    The base that scripts/images.sh makes trusts GATEHOUSE_CA_CERTS; an upstream base
    pulled from a registry brings only its own store (docs/operations.md).
    """
    settings = containers.compose_env()
    if not settings.get("GATEHOUSE_PYTHON_IMAGE", "").startswith("gatehouse-local/"):
        return
    extra = Path(settings.get("GATEHOUSE_CA_CERTS", "/usr/local/share/ca-certificates"))
    image = containers.service_image("gateway-0")
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    store = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "cat", image, bundle],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    for authority in sorted(extra.glob("*.crt")):
        body = "".join(authority.read_text().strip().splitlines()[1:-1])
        assert body in "".join(store.splitlines()), authority
