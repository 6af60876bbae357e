"""The one Traefik configuration under the other settings it supports.

A second Traefik (the same binary and files, on spare ports) renders the dynamic
configuration for the production profile and for compose-style replica hosts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness.backends import REPO
from tests.harness.stack import Stack

ENTRYPOINTS = ("web", "websecure", "grpc", "metrics", "traefik")


def free_ports(count: int) -> list[int]:
    """Ports that nothing listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class SecondTraefik:
    """A second Traefik's entrypoint ports and API URL."""

    ports: dict[str, int]

    @property
    def api(self) -> str:
        """Its API (the `traefik` entrypoint)."""
        return f"http://127.0.0.1:{self.ports['traefik']}"


@pytest.fixture(scope="module")
def production_traefik(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecondTraefik]:
    """A Traefik in the production profile, with named replica hosts, on spare ports."""
    second = SecondTraefik(dict(zip(ENTRYPOINTS, free_ports(len(ENTRYPOINTS)), strict=True)))
    binary = subprocess.run(
        ["bash", "scripts/install-traefik.sh"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    static = yaml.safe_load((REPO / "deploy/traefik/traefik.yml").read_text())
    for name, port in second.ports.items():
        static["entryPoints"][name]["address"] = f"127.0.0.1:{port}"
    static["providers"]["file"]["directory"] = str(REPO / "deploy/traefik/dynamic")
    config = tmp_path_factory.mktemp("traefik") / "traefik.yml"
    config.write_text(yaml.safe_dump(static))
    env = {
        **os.environ,
        "GATEHOUSE_PROFILE": "production",
        "GATEHOUSE_REPLICA_HOSTS": "named",
        "GATEWAY_REPLICAS": "2",
        "AUTHORS_REPLICAS": "2",
        "KEYCLOAK_HOST": "keycloak",
        "GATEHOUSE_TLS_DIR": str(stack.state_dir / "tls") if stack.state_dir else "/nonexistent",
    }
    log = (config.parent / "traefik.log").open("w")
    process = subprocess.Popen(
        [binary, f"--configFile={config}"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while not _routers_loaded(second.api):
            assert process.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, "the second Traefik did not load its routers"
            time.sleep(0.2)
        yield second
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _routers_loaded(api: str) -> bool:
    try:
        answer = httpx.get(f"{api}/api/http/routers", timeout=2)
    except httpx.HTTPError:
        return False
    # Until it has applied its configuration, Traefik answers 404 on every path.
    if answer.status_code != 200:
        return False
    return any(router["name"] == "https-redirect@file" for router in answer.json())


def test_production_redirects_plain_http_to_https(production_traefik: SecondTraefik) -> None:
    web = f"http://127.0.0.1:{production_traefik.ports['web']}"
    read = httpx.get(f"{web}/authors?x=1", timeout=10)
    assert read.status_code == 301
    assert read.headers["location"] == "https://127.0.0.1:8443/authors?x=1"
    # A write keeps its method and body across the redirect.
    write = httpx.post(f"{web}/authors", json={"name": "x"}, timeout=10)
    assert write.status_code == 308
    assert write.headers["location"] == "https://127.0.0.1:8443/authors"


def test_named_replica_hosts_follow_the_replica_counts(
    production_traefik: SecondTraefik,
) -> None:
    def servers(service: str) -> list[str]:
        found: dict[str, Any] = httpx.get(
            f"{production_traefik.api}/api/http/services/{service}@file", timeout=10
        ).json()
        return sorted(server["url"] for server in found["loadBalancer"]["servers"])

    assert servers("gateway") == ["http://gateway-0:8000", "http://gateway-1:8100"]
    assert servers("authors") == ["h2c://authors-0:7051", "h2c://authors-1:7151"]
    assert servers("metrics-authors-1") == ["http://authors-1:9201"]
    assert servers("keycloak") == ["http://keycloak:8180"]


def test_the_development_profile_does_not_redirect(stack: Stack) -> None:
    response = httpx.get(f"{stack.web_url}/health/live", timeout=10)
    assert response.status_code == 200
