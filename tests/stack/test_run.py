"""`make run`'s machinery: cached programs, a second start, process control."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness.backends import REPO
from tests.harness.stack import REPLICATED as PROCESSES
from tests.harness.stack import Stack, native_env


def run_script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run one of scripts/*.sh and capture its output."""
    return subprocess.run(
        ["bash", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("script", ["scripts/install-traefik.sh", "scripts/install-keycloak.sh"])
def test_installed_programs_come_from_the_cache(native_stack: Stack, script: str) -> None:
    started = time.monotonic()
    result = run_script(script, timeout=60)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).exists()
    # No build and no download: a cached program is found in seconds.
    assert time.monotonic() - started < 15
    assert "building" not in result.stderr
    assert "fetching" not in result.stderr


def test_a_second_start_reuses_the_running_stack(native_stack: Stack) -> None:
    started = time.monotonic()
    result = run_script("scripts/run.sh", "up", "-d", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stderr
    assert "viewer-dev-password" in result.stdout
    assert time.monotonic() - started < 60


def test_status_lists_every_program_running(native_stack: Stack) -> None:
    result = run_script("scripts/run.sh", "status", timeout=60)
    assert result.returncode == 0, result.stdout
    lines = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if line}
    programs = ["keycloak", "traefik", "prometheus"]
    for process in ("gateway", "authors", "audit", "ratelimit"):
        programs += [f"{process}:{process}-{k}" for k in range(native_stack.replicas(process))]
    for program in programs:
        assert lines.get(program) == "RUNNING", result.stdout


def _reserved_ports() -> set[int]:
    text = Path("/proc/sys/net/ipv4/ip_local_reserved_ports").read_text().strip()
    ports: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        ports.update(range(int(low), int(high or low) + 1))
    return ports


def test_grpc_ports_are_kept_out_of_ephemeral_assignment(native_stack: Stack) -> None:
    """An outgoing connection must not take a service's gRPC port as its local port:
    `run.sh up` reserved them; where it may not (not root), the operator is told."""
    counts = {f"{p.upper()}_REPLICAS": str(native_stack.replicas(p)) for p in PROCESSES}
    reserved = _reserved_ports()
    result = subprocess.run(
        ["bash", "scripts/reserve-ports.sh"],
        cwd=REPO,
        env=native_env(**counts),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if os.geteuid() != 0:
        assert "could not reserve ports 50051-50053" in result.stderr
        return
    assert "reserved ports 50051-50053" in result.stderr
    for k, process in enumerate(("authors", "audit", "ratelimit")):
        for replica in range(native_stack.replicas(process)):
            assert 50051 + k + 100 * replica in reserved, (process, replica)


def test_ctrl_c_stops_a_foreground_run_cleanly(native_stack: Stack) -> None:
    """`make run` in a terminal: ready, URLs and users printed, Ctrl-C stops every program."""
    counts = {f"{p.upper()}_REPLICAS": str(native_stack.replicas(p)) for p in PROCESSES}
    env = native_env(**counts)
    assert run_script("scripts/run.sh", "down").returncode == 0
    try:
        foreground = subprocess.Popen(
            ["bash", "scripts/run.sh"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert foreground.stdout is not None
        printed = []
        for line in foreground.stdout:
            printed.append(line)
            if "Ctrl-C stops everything" in line:
                break
        assert "viewer-dev-password" in "".join(printed), "".join(printed)
        # What a terminal does on Ctrl-C: SIGINT to the whole foreground process group.
        os.killpg(foreground.pid, signal.SIGINT)
        assert foreground.wait(timeout=120) == 0
        assert run_script("scripts/run.sh", "status").returncode == 3
        supervisord = (native_stack.state_dir or Path()) / "supervisord.pid"
        assert not supervisord.exists()
    finally:
        started = subprocess.run(
            ["bash", "scripts/run.sh", "up", "-d"], cwd=REPO, env=env, timeout=600, check=False
        )
    assert started.returncode == 0
