"""Readiness probes against real sockets, a real HTTP server and a real gRPC server."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time
import urllib.error
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gatehouse_kit.readiness import (
    Failure,
    NotReady,
    Probe,
    accepts,
    grpc_serving,
    http_ok,
    port_closed,
    port_open,
    wait_for_port,
    wait_until,
)


def closed_port() -> int:
    """A loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listen(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = listen()
    yield sock
    sock.close()


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


# --- TCP ports ---------------------------------------------------------------


def test_accepts_tells_a_listening_port_from_a_closed_one(listener: socket.socket) -> None:
    assert accepts(port_of(listener))
    assert not accepts(closed_port())


def test_wait_for_port_returns_once_the_port_opens() -> None:
    port = closed_port()
    opened: list[socket.socket] = []
    timer = threading.Timer(0.3, lambda: opened.append(listen(port)))
    began = time.monotonic()
    timer.start()
    try:
        wait_for_port(port, within=5)
        assert time.monotonic() - began >= 0.25
        assert opened
    finally:
        timer.join()
        for sock in opened:
            sock.close()


def test_wait_for_port_returns_once_the_port_closes(listener: socket.socket) -> None:
    timer = threading.Timer(0.3, listener.close)
    began = time.monotonic()
    timer.start()
    try:
        wait_for_port(port_of(listener), listening=False, within=5)
        assert time.monotonic() - began >= 0.25
    finally:
        timer.join()


def test_wait_for_port_gives_up_at_its_deadline(listener: socket.socket) -> None:
    began = time.monotonic()
    with pytest.raises(TimeoutError, match=r"was not closed within 0\.3 s"):
        wait_for_port(port_of(listener), listening=False, within=0.3)
    assert 0.3 <= time.monotonic() - began < 2
    with pytest.raises(TimeoutError, match=r"was not open within 0\.3 s"):
        wait_for_port(closed_port(), within=0.3)


async def test_port_checks_pass_and_fail_on_real_ports(listener: socket.socket) -> None:
    open_port, unused = port_of(listener), closed_port()
    await port_open(open_port)()
    with pytest.raises(ConnectionRefusedError):
        await port_open(unused)()
    await port_closed(unused)()
    with pytest.raises(NotReady, match="still accepts connections"):
        await port_closed(open_port)()


# --- HTTP ----------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    """/ok answers 200, /starting 503, /moved redirects to /ok."""

    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/ok")
        else:
            self.send_response(200 if self.path == "/ok" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read the answers, not the access log."""


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


async def test_http_ok_passes_on_200_only(web: str) -> None:
    await http_ok(f"{web}/ok")()
    with pytest.raises(NotReady, match="HTTP 503"):
        await http_ok(f"{web}/starting")()


async def test_http_ok_does_not_follow_redirects(web: str) -> None:
    with pytest.raises(NotReady, match="HTTP 302"):
        await http_ok(f"{web}/moved")()


async def test_http_ok_ignores_proxy_settings(web: str, monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}"
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, nowhere)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    await http_ok(f"{web}/ok")()


async def test_http_ok_fails_when_nothing_listens() -> None:
    with pytest.raises(urllib.error.URLError):
        await http_ok(f"http://127.0.0.1:{closed_port()}/ok", timeout=1)()


def test_http_ok_wants_an_http_url() -> None:
    with pytest.raises(ValueError, match="not an HTTP URL"):
        http_ok("ftp://127.0.0.1/ok")


# --- gRPC ----------------------------------------------------------------------

Health = tuple[str, health.aio.HealthServicer]


@pytest.fixture
async def grpc_health() -> AsyncIterator[Health]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(None)


async def test_grpc_serving_passes_on_serving(grpc_health: Health) -> None:
    target, servicer = grpc_health
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await grpc_serving(target)()


async def test_grpc_serving_fails_on_not_serving(grpc_health: Health) -> None:
    target, servicer = grpc_health
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    with pytest.raises(NotReady, match="NOT_SERVING"):
        await grpc_serving(target)()


async def test_grpc_serving_fails_when_nothing_listens() -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await grpc_serving(f"127.0.0.1:{closed_port()}", timeout=1)()
    assert raised.value.code() in {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }


async def _sent_headers(authority: str | None) -> tuple[int, bytes]:
    """What a health check sends to a bare HTTP/2 listener that never answers it."""
    received = bytearray()
    hung_up = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS frame
        await writer.drain()
        while data := await reader.read(4096):
            received.extend(data)
        writer.close()
        hung_up.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await grpc_serving(f"127.0.0.1:{port}", authority=authority, timeout=0.5)()
        await asyncio.wait_for(hung_up.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()
    return port, bytes(received)


async def test_grpc_serving_sends_the_authority_it_is_given() -> None:
    # gRPC core sends header values as plain HPACK literals: length byte, then the value.
    _, sent = await _sent_headers("authors")
    assert b"/grpc.health.v1.Health/Check" in sent
    assert b":authority\x07authors" in sent
    port, sent = await _sent_headers(None)
    target = f"127.0.0.1:{port}".encode()
    assert b":authority" + bytes([len(target)]) + target in sent


# --- the runner ----------------------------------------------------------------


async def test_wait_until_retries_a_probe_until_it_passes() -> None:
    attempts = 0

    async def third_time_lucky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise NotReady(f"attempt {attempts}")

    failures = await wait_until(
        [Probe("flaky", third_time_lucky)], deadline=time.monotonic() + 5, interval=0.01
    )
    assert failures == []
    assert attempts == 3


async def test_wait_until_names_the_probe_that_never_passed_and_its_last_error(
    listener: socket.socket,
) -> None:
    unused = closed_port()
    began = time.monotonic()
    failures = await wait_until(
        [
            Probe("listening", port_open(port_of(listener))),
            Probe("nothing there", port_open(unused)),
        ],
        deadline=time.monotonic() + 0.5,
        interval=0.05,
    )
    assert 0.5 <= time.monotonic() - began < 2
    assert [failure.probe for failure in failures] == ["nothing there"]
    assert failures[0].error.startswith("ConnectionRefusedError: ")
    assert str(failures[0]) == f"nothing there: {failures[0].error}"


async def test_wait_until_reports_a_grpc_error_on_one_line() -> None:
    target = f"127.0.0.1:{closed_port()}"
    failures = await wait_until(
        [Probe("authors", grpc_serving(target, timeout=0.2))], deadline=time.monotonic() + 0.5
    )
    assert [failure.probe for failure in failures] == ["authors"]
    error = failures[0].error
    assert error.startswith(("gRPC UNAVAILABLE: ", "gRPC DEADLINE_EXCEEDED: ")), error
    assert "\n" not in error
    assert len(error) <= 200


async def test_wait_until_reports_the_last_error_not_the_first() -> None:
    attempts = 0

    async def counting() -> None:
        nonlocal attempts
        attempts += 1
        raise NotReady(f"attempt {attempts}")

    failures = await wait_until(
        [Probe("counting", counting)], deadline=time.monotonic() + 0.3, interval=0.05
    )
    assert attempts > 1
    assert failures == [Failure("counting", f"NotReady: attempt {attempts}")]


async def test_wait_until_cuts_a_hanging_check_at_the_deadline() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    began = time.monotonic()
    failures = await asyncio.wait_for(
        wait_until([Probe("hangs", hangs)], deadline=time.monotonic() + 0.3), 5
    )
    assert time.monotonic() - began < 1.5
    assert failures == [Failure("hangs", "TimeoutError")]


async def test_wait_until_runs_its_probes_side_by_side() -> None:
    async def slow() -> None:
        await asyncio.sleep(0.4)

    began = time.monotonic()
    failures = await wait_until(
        [Probe(f"slow-{n}", slow) for n in range(3)], deadline=time.monotonic() + 0.7
    )
    assert failures == []
    assert time.monotonic() - began < 0.7
