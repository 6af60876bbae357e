"""Readiness probes: a TCP port open or closed, a URL answering 200, a gRPC service
answering SERVING; and one runner that retries probes until they pass or a deadline
expires.

A check is a coroutine function that returns when what it probes is ready and raises
when it is not yet, with an exception that says why. `wait_until` retries each of a
batch of named checks until it passes or the deadline expires, and returns the ones
that never passed with their last error. Code that cannot await (test fixtures that
start and stop servers) waits for a port with `wait_for_port` instead.

The scripts, the benchmarks and the test harness use this module; no service does.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from email.message import Message
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatehouse_kit.grpc_client import open_channel

LOOPBACK = "127.0.0.1"

Check = Callable[[], Awaitable[None]]
"""Returns once ready; raises (any exception, saying why) while not."""


class NotReady(Exception):
    """What a check found instead of ready."""


@dataclass(frozen=True)
class Probe:
    """A check with the name under which it is reported."""

    name: str
    check: Check


@dataclass(frozen=True)
class Failure:
    """A probe that never passed, and the last error it raised."""

    probe: str
    error: str

    def __str__(self) -> str:
        return f"{self.probe}: {self.error}"


def _describe(error: BaseException) -> str:
    """One line of at most 200 characters saying what went wrong."""
    if isinstance(error, grpc.aio.AioRpcError):
        text = f"gRPC {error.code().name}: {error.details()}"
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return " ".join(text.split())[:200]


async def _retry(probe: Probe, deadline: float, interval: float) -> Failure | None:
    """Run `probe` every `interval` seconds until it passes (None) or `deadline`
    (time.monotonic()) passes; an attempt still running then is cut short."""
    error = "not tried before the deadline"
    while (left := deadline - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(left):
                await probe.check()
        except Exception as exc:  # any failure means "not ready yet"
            error = _describe(exc)
            await asyncio.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        else:
            return None
    return Failure(probe.name, error)


async def wait_until(
    probes: Iterable[Probe], *, deadline: float, interval: float = 0.25
) -> list[Failure]:
    """Retry every probe, all at once, until each passes or `deadline` (a
    time.monotonic() value) passes. Returns the probes that never passed, in order."""
    results = await asyncio.gather(*(_retry(probe, deadline, interval) for probe in probes))
    return [failure for failure in results if failure is not None]


def _connect(port: int, host: str, timeout: float) -> None:
    """Open and close one TCP connection to `host`:`port`; OSError when refused."""
    with socket.create_connection((host, port), timeout=timeout):
        pass


def accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on `host`:`port` right now."""
    try:
        _connect(port, host, timeout)
    except OSError:
        return False
    return True


def wait_for_port(
    port: int,
    *,
    listening: bool = True,
    host: str = LOOPBACK,
    within: float = 20.0,
    interval: float = 0.05,
) -> None:
    """Block until `host`:`port` accepts connections (or, with `listening=False`,
    refuses them); TimeoutError after `within` seconds."""
    deadline = time.monotonic() + within
    while accepts(port, host) != listening:
        if time.monotonic() >= deadline:
            state = "open" if listening else "closed"
            raise TimeoutError(f"{host}:{port} was not {state} within {within:g} s")
        time.sleep(interval)


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> Check:
    """A check that passes when `host`:`port` accepts TCP connections."""

    async def check() -> None:
        await asyncio.to_thread(_connect, port, host, timeout)

    return check


def port_closed(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> Check:
    """A check that passes when nothing accepts TCP connections on `host`:`port`."""

    async def check() -> None:
        if await asyncio.to_thread(accepts, port, host, timeout):
            raise NotReady(f"{host}:{port} still accepts connections")

    return check


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer of its own, not a hop to another URL."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> None:
        return None


def _status(url: str, timeout: float) -> int:
    """The status code of GET `url`, with no proxy (what the environment names is for
    the outside, not for probes of local processes)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


def http_ok(url: str, timeout: float = 2.0) -> Check:
    """A check that passes when GET `url` answers 200 (redirects are not followed)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {url}")

    async def check() -> None:
        status = await asyncio.to_thread(_status, url, timeout)
        if status != 200:
            raise NotReady(f"HTTP {status}")

    return check


def grpc_answers(
    target: str,
    call: Callable[[grpc.aio.Channel], Awaitable[object]],
    *,
    authority: str | None = None,
) -> Check:
    """A check that passes when `call` on a fresh channel to `target` returns
    (a gRPC error means not yet). `authority` sets the :authority header, on which
    Traefik routes calls whose path does not name the service."""

    async def check() -> None:
        channel = open_channel(target, authority=authority, max_attempts=1)
        try:
            await call(channel)
        finally:
            await channel.close()

    return check


def grpc_serving(target: str, *, authority: str | None = None, timeout: float = 2.0) -> Check:
    """A check that passes when grpc.health.v1 at `target` answers SERVING."""

    async def health(channel: grpc.aio.Channel) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise NotReady(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    return grpc_answers(target, health, authority=authority)
