"""What benchmarks start and stop: services as subprocesses, a throwaway Traefik, tools.

`child` runs a command until the benchmark is done with it: it waits for a readiness
probe (a port, an HTTP answer, a gRPC health check or routed call) and stops the
process (SIGTERM, then SIGKILL) whatever happens. `traefik` writes a throwaway static
and dynamic configuration and runs the cached Traefik on it. `installed` runs one of the
scripts/install-*.sh (each builds or fetches once, caches, and prints the binary's path).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatehouse_kit.grpc_client import open_channel

REPO = Path(__file__).resolve().parents[1]
START_WITHIN_SECONDS = 60.0
STOP_WITHIN_SECONDS = 15.0
POLL_SECONDS = 0.1

# True once what a child serves answers; tried every POLL_SECONDS until then.
Probe = Callable[[], Awaitable[bool]]

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


@asynccontextmanager
async def child(
    argv: list[str], *, probe: Probe, what: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`argv` with `env` added to this process's environment, once `probe` answers;
    stopped on exit. Its stdout is discarded; its stderr (warnings and worse) is kept."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, "LOG_LEVEL": "WARNING", **(env or {})},
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        try:
            async with asyncio.timeout(START_WITHIN_SECONDS):
                while not await probe():
                    if process.returncode is not None:
                        raise RuntimeError(f"{what} exited with {process.returncode}")
                    await asyncio.sleep(POLL_SECONDS)
        except TimeoutError:
            within = f"{START_WITHIN_SECONDS:.0f} s"
            raise RuntimeError(f"{what} was not ready within {within}") from None
        yield process
    finally:
        await stop(process)


def python_module(
    module: str, env: dict[str, str], probe: Probe
) -> AbstractAsyncContextManager[asyncio.subprocess.Process]:
    """`python -m module` (a service's entry point) as a `child`."""
    return child([sys.executable, "-m", module], probe=probe, what=module, env=env)


def port_open(port: int) -> Probe:
    """Something accepts TCP connections on 127.0.0.1:`port`."""

    async def probe() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    return probe


def http_answers(url: str) -> Probe:
    """`url` answers with a status below 500."""

    async def probe() -> bool:
        async with httpx.AsyncClient(timeout=1) as client:
            try:
                return (await client.get(url)).status_code < 500
            except httpx.TransportError:
                return False

    return probe


def grpc_answers(target: str, call: Callable[[grpc.aio.Channel], Awaitable[bool]]) -> Probe:
    """`call` on a fresh channel to `target` returns True (a gRPC error counts as not yet)."""

    async def probe() -> bool:
        channel = open_channel(target, max_attempts=1)
        try:
            return await call(channel)
        except grpc.aio.AioRpcError:
            return False
        finally:
            await channel.close()

    return probe


def grpc_serving(target: str) -> Probe:
    """The gRPC health check at `target` answers SERVING."""

    async def check(channel: grpc.aio.Channel) -> bool:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return grpc_answers(target, check)


@asynccontextmanager
async def traefik(
    workdir: Path, *, entrypoint: str, port: int, dynamic: str, probe: Probe
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The cached Traefik with one entrypoint on 127.0.0.1:`port` and the `dynamic`
    configuration (YAML) as its file provider, once `probe` answers through it."""
    binary = await installed("install-traefik.sh")
    dynamic_file = workdir / "traefik-dynamic.yml"
    dynamic_file.write_text(dynamic)
    static = workdir / "traefik.yml"
    static.write_text(TRAEFIK_STATIC.format(entrypoint=entrypoint, port=port, dynamic=dynamic_file))
    async with child([binary, f"--configFile={static}"], probe=probe, what="traefik") as process:
        yield process
