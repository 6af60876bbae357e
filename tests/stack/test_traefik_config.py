"""scripts/traefik-config.sh: Traefik's static configuration with its internal entrypoints
bound to GATEHOUSE_INTERNAL_BIND_ADDRESS, everything else as in deploy/traefik/traefik.yml."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.backends import REPO

SOURCE = REPO / "deploy/traefik/traefik.yml"
INTERNAL = {"grpc": 8081, "metrics": 8082, "traefik": 8083}
PUBLIC = {"web": ":8080", "websecure": ":8443"}


# What the script reads from the environment.
RENDERED_FROM = (
    "GATEHOUSE_INTERNAL_BIND_ADDRESS",
    "TRACING_ENABLED",
    "TRACING_SAMPLE_RATIO",
    "TRACING_OTLP_ENDPOINT",
    "TRAEFIK_ACCESS_LOG",
)


def render(out: Path, bind: str | None, **tracing: str) -> subprocess.CompletedProcess[str]:
    """Run the script into `out`, with GATEHOUSE_INTERNAL_BIND_ADDRESS set to `bind` and
    the TRACING_* variables given."""
    env = {k: v for k, v in os.environ.items() if k not in RENDERED_FROM}
    if bind is not None:
        env["GATEHOUSE_INTERNAL_BIND_ADDRESS"] = bind
    env.update(tracing)
    return subprocess.run(
        ["bash", "scripts/traefik-config.sh", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def addresses(config: dict[str, Any]) -> dict[str, str]:
    """Each entrypoint's address."""
    return {name: entry["address"] for name, entry in config["entryPoints"].items()}


@pytest.mark.parametrize(
    ("bind", "host"), [(None, "127.0.0.1"), ("", "127.0.0.1"), ("10.0.0.5", "10.0.0.5")]
)
def test_internal_entrypoints_listen_on_the_bind_address(
    tmp_path: Path, bind: str | None, host: str
) -> None:
    out = tmp_path / "traefik.yml"
    result = render(out, bind)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(out.read_text())
    expected = {**PUBLIC, **{name: f"{host}:{port}" for name, port in INTERNAL.items()}}
    assert addresses(rendered) == expected
    # Nothing else differs from the file in the repository.
    source = yaml.safe_load(SOURCE.read_text())
    for name in INTERNAL:
        source["entryPoints"][name]["address"] = rendered["entryPoints"][name]["address"]
    assert rendered == source


def test_the_repository_file_binds_the_internal_entrypoints_to_loopback() -> None:
    """Read as it is (a Traefik started on it directly), nothing internal is exposed."""
    found = addresses(yaml.safe_load(SOURCE.read_text()))
    assert found == {**PUBLIC, **{name: f"127.0.0.1:{port}" for name, port in INTERNAL.items()}}


@pytest.mark.parametrize(
    "bind", ["localhost", "10.0.0.256", "::1", "10.0.0", "010.0.0.5", "10.0.0.5:9000", "1.2.3.4 "]
)
def test_a_bad_bind_address_is_refused_and_writes_nothing(tmp_path: Path, bind: str) -> None:
    out = tmp_path / "traefik.yml"
    out.write_text("previous\n")
    result = render(out, bind)
    assert result.returncode == 2
    assert "GATEHOUSE_INTERNAL_BIND_ADDRESS must be an IPv4 address" in result.stderr
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traefik.yml"]


def test_tracing_is_rendered_from_the_settings_every_process_reads(tmp_path: Path) -> None:
    out = tmp_path / "traefik.yml"
    default = render(out, None)
    assert default.returncode == 0, default.stderr
    tracing = yaml.safe_load(out.read_text())["tracing"]
    assert tracing["sampleRate"] == 0.01
    assert tracing["otlp"] == {"grpc": {"endpoint": "127.0.0.1:4317", "insecure": True}}
    chosen = render(
        out, None, TRACING_SAMPLE_RATIO="0.5", TRACING_OTLP_ENDPOINT="http://jaeger:4317"
    )
    assert chosen.returncode == 0, chosen.stderr
    rendered = yaml.safe_load(out.read_text())
    assert rendered["tracing"]["sampleRate"] == 0.5
    assert rendered["tracing"]["otlp"]["grpc"]["endpoint"] == "jaeger:4317"
    # The public hops are traced; scrapes, the dashboard and the internal gRPC hop (which
    # passes the gateway's trace context on and logs it) are not.
    for name in ("metrics", "traefik", "grpc"):
        assert rendered["entryPoints"][name]["observability"] == {"tracing": False}
    for name in ("web", "websecure"):
        assert "observability" not in rendered["entryPoints"][name]
    assert rendered["accessLog"]["fields"]["headers"]["names"]["Traceparent"] == "keep"
    off = render(out, None, TRACING_ENABLED="false")
    assert off.returncode == 0, off.stderr
    without = yaml.safe_load(out.read_text())
    assert "tracing" not in without
    source = yaml.safe_load(SOURCE.read_text())
    del source["tracing"]
    assert without == source


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRACING_SAMPLE_RATIO", "2"),
        ("TRACING_SAMPLE_RATIO", "-0.1"),
        ("TRACING_SAMPLE_RATIO", "1.5"),
        ("TRACING_SAMPLE_RATIO", "ten"),
        ("TRACING_OTLP_ENDPOINT", "jaeger"),
        ("TRACING_OTLP_ENDPOINT", "https://jaeger:4317"),
        ("TRACING_OTLP_ENDPOINT", "http://jaeger:4317/v1; rm -rf /"),
        ("TRAEFIK_ACCESS_LOG", "logs/access.log"),
        ("TRAEFIK_ACCESS_LOG", "/var/log/a log"),
        ("TRAEFIK_ACCESS_LOG", '/var/log/a"\n  format: common'),
    ],
)
def test_a_bad_setting_is_refused_and_writes_nothing(
    tmp_path: Path, variable: str, value: str
) -> None:
    out = tmp_path / "traefik.yml"
    out.write_text("previous\n")
    result = render(out, None, **{variable: value})
    assert result.returncode == 2
    assert f"{variable} must be" in result.stderr
    assert out.read_text() == "previous\n"


def test_the_access_log_goes_to_the_named_file_or_to_standard_output(tmp_path: Path) -> None:
    source = yaml.safe_load(SOURCE.read_text())
    out = tmp_path / "traefik.yml"
    access_log = "/var/log/gatehouse/traefik-access.log"
    assert render(out, None, TRAEFIK_ACCESS_LOG=access_log).returncode == 0
    rendered = yaml.safe_load(out.read_text())
    assert rendered["accessLog"] == {
        **source["accessLog"],
        "filePath": access_log,
    }
    # Nothing else moved.
    assert {k: v for k, v in rendered.items() if k != "accessLog"} == {
        k: v for k, v in source.items() if k != "accessLog"
    }
    # Unset or empty: standard output, as in the repository's file.
    for value in (None, ""):
        extra = {} if value is None else {"TRAEFIK_ACCESS_LOG": value}
        assert render(out, None, **extra).returncode == 0
        assert "filePath" not in yaml.safe_load(out.read_text())["accessLog"]
