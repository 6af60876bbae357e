"""gRPC core defaults reach every service before grpc is loaded (grpc reads them once)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gatehouse_kit import GRPC_EXPERIMENTS

PROBE = """
import os, sys
import {package}
assert "grpc" not in sys.modules, "grpc was imported before the kit's defaults"
print(os.environ.get("GRPC_EXPERIMENTS"))
"""


def _importing(package: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(package=package)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(
    "package", ["gatehouse_audit", "gatehouse_authors", "gatehouse_gateway", "gatehouse_ratelimit"]
)
def test_importing_a_service_package_sets_the_grpc_defaults_first(package: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    assert _importing(package, env) == GRPC_EXPERIMENTS


def test_an_operators_own_setting_wins() -> None:
    env = {**os.environ, "GRPC_EXPERIMENTS": "-event_engine_client"}
    assert _importing("gatehouse_ratelimit", env) == "-event_engine_client"
