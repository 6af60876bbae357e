"""The container paths of the harness: the Docker engine, image names, testcontainers.

Image names come from docker-compose.yml as the Compose CLI resolves it with the
environment and the names `make images` chose (`$GATEHOUSE_STATE/compose/images.env`,
written by scripts/images.sh); the environment wins over the file. testcontainers' reaper
(Ryuk) is used when its image can be had; where it cannot (no registry), it is disabled
and the harness removes the containers of the session itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.harness.backends import REPO

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

LOG = logging.getLogger(__name__)
STATE = Path(os.environ.get("GATEHOUSE_STATE", str(Path.home() / ".local/state/gatehouse")))
IMAGES_ENV = STATE / "compose" / "images.env"
COMPOSE = ("docker", "compose", "-f", "docker-compose.yml")


class NoDockerEngine(RuntimeError):
    """A container path was asked for and no Docker engine answers."""


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


def require_engine(what: str) -> None:
    """Fail with how to get an engine when none answers."""
    if not docker_answers():
        raise NoDockerEngine(
            f"{what} needs a Docker engine and none answers: "
            "`bash scripts/docker-engine.sh install` and `bash scripts/docker-engine.sh start`"
        )


def compose_env() -> dict[str, str]:
    """The environment for the Compose CLI: images.env, then the process environment."""
    env: dict[str, str] = {}
    if IMAGES_ENV.exists():
        for line in IMAGES_ENV.read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                env[key] = value
    return {**env, **os.environ}


def compose_config() -> dict[str, Any]:
    """docker-compose.yml as the Compose CLI resolves it, every profile active."""
    result = subprocess.run(
        [*COMPOSE, "--profile", "grafana", "config", "--format", "json"],
        cwd=REPO,
        env=compose_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"docker compose config failed: {result.stderr.strip()}")
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def service_image(service: str) -> str:
    """The image docker-compose.yml runs for `service` here (e.g. `postgres`)."""
    return str(compose_config()["services"][service]["image"])


def image_available(image: str) -> bool:
    """True when the engine has `image` or can pull it."""
    for command in (["image", "inspect", image], ["pull", "-q", image]):
        done = subprocess.run(["docker", *command], capture_output=True, timeout=300, check=False)
        if done.returncode == 0:
            return True
    return False


@cache
def configure_testcontainers() -> None:
    """Keep testcontainers' reaper where its image can be had, else disable it (once)."""
    from testcontainers.core.config import testcontainers_config

    if testcontainers_config.ryuk_disabled:
        return
    if not image_available(testcontainers_config.ryuk_image):
        LOG.warning(
            "testcontainers' reaper image %s cannot be had: reaper disabled, "
            "the harness removes the session's containers itself",
            testcontainers_config.ryuk_image,
        )
        testcontainers_config.ryuk_disabled = True


@contextlib.contextmanager
def started(container: DockerContainer) -> Iterator[DockerContainer]:
    """`container` started by testcontainers and, whatever happens, removed at the end.

    The harness removes it itself (with its anonymous volumes), reaper or not.
    """
    require_engine("GATEHOUSE_TEST_BACKENDS=testcontainers")
    configure_testcontainers()
    try:
        yield container.start()
    finally:
        if (wrapped := container.get_wrapped_container()) is not None:
            subprocess.run(
                ["docker", "rm", "-f", "-v", wrapped.id],
                capture_output=True,
                timeout=120,
                check=False,
            )


def session_containers() -> list[str]:
    """Ids of the containers this test session started through testcontainers."""
    from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

    listed = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={LABEL_SESSION_ID}={SESSION_ID}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return listed.stdout.split()
