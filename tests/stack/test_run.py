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
from tests.harness.stack import Stack, native_env, running_stack


def run_script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run one of scripts/*.sh and capture its output."""
    return subprocess.run(
        ["bash", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    "script",
    ["scripts/install-traefik.sh", "scripts/install-keycloak.sh", "scripts/install-jaeger.sh"],
)
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
    programs = ["keycloak", "traefik", "prometheus", "alertmanager", "alert-receiver", "jaeger"]
    for process in ("gateway", "authors", "audit", "ratelimit"):
        programs += [f"{process}:{process}-{k}" for k in range(native_stack.replicas(process))]
    for program in programs:
        assert lines.get(program) == "RUNNING", result.stdout


def _lock_holders(lock: Path) -> list[str]:
    """Every process that has `lock` open, as "pid command", read from /proc."""
    holders = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                if Path(os.readlink(fd)) == lock:
                    comm = (fd_dir.parent / "comm").read_text().strip()
                    holders.append(f"{fd_dir.parent.name} {comm}")
            except OSError:
                continue
    return holders


def _answers_promptly(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`run.sh ARGS` must answer within 30 s whatever else runs (it may not wait on a lock)."""
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "scripts/run.sh", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert time.monotonic() - started < 30
    return result


def test_a_held_lock_is_named_and_waited_for_within_a_bound(native_stack: Stack) -> None:
    """Another command holding the lock: the next one says which, and gives up in time."""
    lock = (native_stack.state_dir or Path()) / "run.lock"
    holder = subprocess.Popen(
        ["flock", str(lock), "sh", "-c", f"echo 'pid $$: a test holder' > {lock}; sleep 30"],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while "a test holder" not in lock.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        result = _answers_promptly("down", env=native_env(GATEHOUSE_LOCK_WAIT_SECONDS="2"))
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    assert result.returncode == 4, result.stderr
    assert "held by: pid" in result.stderr
    assert "a test holder" in result.stderr
    # The stack was left alone.
    assert _answers_promptly("status", env=native_env()).returncode == 0


def test_ctrl_c_stops_a_foreground_run_cleanly(native_stack: Stack) -> None:
    """`make run` in a terminal, with PostgreSQL and Redis started under its lock: ready,
    URLs and users printed; meanwhile `up -d`, `status` and the test harness answer
    promptly; Ctrl-C stops every program, and no surviving process holds the lock."""
    counts = {f"{p.upper()}_REPLICAS": str(native_stack.replicas(p)) for p in PROCESSES}
    env = native_env(**counts)
    lock = (native_stack.state_dir or Path()) / "run.lock"
    assert run_script("scripts/run.sh", "down").returncode == 0
    # The daemons that outlive a run are started by it, under its lock.
    assert run_script("scripts/redis.sh", "stop").returncode == 0
    assert run_script("scripts/postgres.sh", "stop").returncode == 0
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
        assert _lock_holders(lock) == []
        attached = _answers_promptly("up", "-d", env=env)
        assert attached.returncode == 0, attached.stderr
        assert "already running" in attached.stderr
        assert _answers_promptly("status", env=env).returncode == 0
        started = time.monotonic()
        with running_stack() as attached_stack:
            assert attached_stack.web_url == native_stack.web_url
        assert time.monotonic() - started < 30
        # What a terminal does on Ctrl-C: SIGINT to the whole foreground process group.
        os.killpg(foreground.pid, signal.SIGINT)
        assert foreground.wait(timeout=120) == 0
        assert _answers_promptly("status", env=env).returncode == 3
        supervisord = (native_stack.state_dir or Path()) / "supervisord.pid"
        assert not supervisord.exists()
        # PostgreSQL and Redis outlive the run, without its lock.
        assert run_script("scripts/postgres.sh", "status").returncode == 0
        assert run_script("scripts/redis.sh", "status").returncode == 0
        assert _lock_holders(lock) == []
        assert subprocess.run(["flock", "-n", str(lock), "true"], check=False).returncode == 0
    finally:
        started_again = subprocess.run(
            ["bash", "scripts/run.sh", "up", "-d"], cwd=REPO, env=env, timeout=600, check=False
        )
    assert started_again.returncode == 0
