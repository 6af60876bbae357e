"""What benchmarks start and stop: services as subprocesses, a throwaway Traefik, tools.

`child` runs a command until the benchmark is done with it: it waits for a readiness
check of gatehouse_kit.readiness (a port, an HTTP 200, a gRPC health check or routed
call) and stops the process (SIGTERM, then SIGKILL) whatever happens. `traefik` writes a
throwaway static and dynamic configuration and runs the cached Traefik on it. `installed`
runs one of the scripts/install-*.sh (each builds or fetches once, caches, and prints the
binary's path).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from gatehouse_kit.readiness import (
    Check,
    Probe,
    grpc_answers,
    grpc_serving,
    http_ok,
    port_open,
    wait_until,
)

__all__ = [
    "REPO",
    "child",
    "grpc_answers",
    "grpc_serving",
    "http_answers",
    "installed",
    "port_open",
    "python_module",
    "stop",
    "traefik",
]

REPO = Path(__file__).resolve().parents[1]
START_WITHIN_SECONDS = 60.0
STOP_WITHIN_SECONDS = 15.0
POLL_SECONDS = 0.1

# What the benchmarks wait for over HTTP: a 200.
http_answers = http_ok

TRAEFIK_STATIC = """\
entryPoints:
  {entrypoint}:
    address: "127.0.0.1:{port}"
providers:
  file:
    filename: "{dynamic}"
log:
  level: ERROR
"""


async def installed(script: str) -> str:
    """The binary path that scripts/`script` prints (building it on the first run only)."""
    installer = await asyncio.create_subprocess_exec(
        "bash", str(REPO / "scripts" / script), stdout=asyncio.subprocess.PIPE
    )
    output, _ = await installer.communicate()
    if installer.returncode != 0:
        raise RuntimeError(f"scripts/{script} failed with {installer.returncode}")
    return output.decode().strip().splitlines()[-1]


async def output_of(process: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    """The process's standard output and error once it exits; killed if the wait is
    cancelled (the runner's budget), so that no load generator outlives its benchmark."""
    try:
        return await process.communicate()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, and SIGKILL if the process has not exited within STOP_WITHIN_SECONDS."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_WITHIN_SECONDS)
    except TimeoutError:
        # It may have exited meanwhile.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _ready(process: asyncio.subprocess.Process, probe: Check, what: str) -> None:
    """Return once `probe` passes; RuntimeError if the process exits first or the probe
    has not passed within START_WITHIN_SECONDS."""
    deadline = time.monotonic() + START_WITHIN_SECONDS
    ready = asyncio.create_task(
        wait_until([Probe(what, probe)], deadline=deadline, interval=POLL_SECONDS)
    )
    exited = asyncio.create_task(process.wait())
    try:
        await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (ready, exited):
            task.cancel()
        await asyncio.gather(ready, exited, return_exceptions=True)
    if not ready.cancelled():
        failures = ready.result()
        if not failures:
            return
        within = f"{START_WITHIN_SECONDS:.0f} s"
        raise RuntimeError(f"{what} was not ready within {within} ({failures[0].error})")
    raise RuntimeError(f"{what} exited with {process.returncode}")


@asynccontextmanager
async def child(
    argv: list[str], *, probe: Check, what: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`argv` with `env` added to this process's environment, once `probe` passes;
    stopped on exit. Its stdout is discarded; its stderr (warnings and worse) is kept."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, "LOG_LEVEL": "WARNING", **(env or {})},
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        await _ready(process, probe, what)
        yield process
    finally:
        await stop(process)


def python_module(
    module: str, env: dict[str, str], probe: Check
) -> AbstractAsyncContextManager[asyncio.subprocess.Process]:
    """`python -m module` (a service's entry point) as a `child`."""
    return child([sys.executable, "-m", module], probe=probe, what=module, env=env)


@asynccontextmanager
async def traefik(
    workdir: Path, *, entrypoint: str, port: int, dynamic: str, probe: Check
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The cached Traefik with one entrypoint on 127.0.0.1:`port` and the `dynamic`
    configuration (YAML) as its file provider, once `probe` passes through it."""
    binary = await installed("install-traefik.sh")
    dynamic_file = workdir / "traefik-dynamic.yml"
    dynamic_file.write_text(dynamic)
    static = workdir / "traefik.yml"
    static.write_text(TRAEFIK_STATIC.format(entrypoint=entrypoint, port=port, dynamic=dynamic_file))
    async with child([binary, f"--configFile={static}"], probe=probe, what="traefik") as process:
        yield process
