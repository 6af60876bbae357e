"""gateway /web: idle-socket memory and request round trips, each beside a bare echo app.

Starts what it needs: Redis and PostgreSQL must answer (`scripts/redis.sh start`,
`scripts/postgres.sh start`); the authors, ratelimit and audit services and the gateway
run as subprocesses (`python -m gatehouse_<service>`), each service on a database of its
own made for the run, tokens are RS256 JWTs of a key made for
the run and published by a JWKS endpoint in this process, so the gateway verifies them
exactly as it verifies Keycloak's. The baseline is a bare FastAPI WebSocket echo route
(`echo_app` below) under the same uvicorn.

- (b) idle sockets: SOCKETS authenticated sockets held by ONE gateway process; RSS per
  socket = (RSS holding them - RSS before) / SOCKETS. Clients are raw asyncio protocols
  (`_RawClient`: handshake, pongs, nothing else) spread over loopback source addresses 127.0.0.2..
  so ephemeral ports do not run out; RLIMIT_NOFILE is raised to its hard limit. Like a
  browser, each offers permessage-deflate, which both servers decline (a negotiated
  zlib state per socket would about double the figure; docs/websocket.md).
- (c) round trips: GET_AUTHOR at RATE messages per second, open loop (each request is
  sent at its scheduled time over CLIENTS `_RawClient` sockets; latency counts from that
  time), p99.
  Beside it, the CPU time each process spent per message over the paced run (warm-up
  included): the gateway, the three services it calls, and this process sending the load;
  and, for context, the same path paced at REDUCED_RATE.

Run: `uv run python -m benchmarks gateway_ws`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from benchmarks.common import (
    Figure,
    Measurement,
    percentile,
    process_cpu_seconds,
    write_result,
)
from benchmarks.processes import child, port_open, python_module
from gatehouse_audit import migrate as audit_migrate
from gatehouse_authors import migrate as authors_migrate
from tests.harness.backends import NATIVE_POSTGRES_URL, NATIVE_REDIS_URL
from tests.harness.databases import create_database, drop_database
from tests.harness.private import free_port

SOCKETS = int(os.environ.get("BENCH_WS_SOCKETS", "10000"))
SOCKET_TARGET_KIB = 40.0
USERS = 100
SOURCE_ADDRESSES = 20
OPEN_CONCURRENCY = 200
RATE = 1000.0
REDUCED_RATE = 700.0
SETTLE_SECONDS = 3.0
CLIENTS = 20
WARMUP_SECONDS = 2.0
SECONDS = 10.0
P99_TARGET_MS = 25.0
ISSUER = "http://bench.gatehouse.test/auth/realms/gatehouse"
CLIENT_ID = "gatehouse-web"
RULES = """\
domains:
  ws_messages:
    descriptors:
      - descriptor: [{key: user}]
        limits: {default: {requests_per_unit: 10000000, unit: hour}}
  ws_connections:
    lease:
      limits: {default: 100000}
"""

echo_app = FastAPI()


@echo_app.websocket("/web")
async def _echo(websocket: WebSocket) -> None:
    """The baseline: accept, say hello (as auth_ok would), echo every text frame."""
    await websocket.accept()
    await websocket.send_text('{"type":"auth_ok"}')
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        return


class _Issuer:
    """A signing key for the run, its JWKS served over HTTP on loopback."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": "bench", "use": "sig", "alg": "RS256"})
        body = json.dumps({"keys": [jwk]}).encode()

        class Jwks(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.jwks_url = f"http://127.0.0.1:{self.server.server_port}/certs"

    def token(self, user: str) -> str:
        now = time.time()
        claims = {
            "iss": ISSUER,
            "sub": user,
            "azp": CLIENT_ID,
            "preferred_username": user,
            "iat": int(now),
            "exp": int(now) + 3600,
            "resource_access": {CLIENT_ID: {"roles": ["get-authors", "create-author"]}},
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "bench"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class _RawClient(asyncio.Protocol):
    """A WebSocket client as an asyncio protocol: the handshake, pongs, masked text frames
    out, text frames in. `ready` resolves once a frame containing `marker` arrives (the
    auth_ok); later text frames go to `on_text`.

    The load generator of both workloads. The `websockets` library's client spent about
    150 µs of CPU per paced message, this one about 110 µs (scheduling and request ids
    included): on 2 cores, what the load generator spends is taken from the path under
    test, the reason ghz stands in for a Python gRPC client in the gRPC benchmarks."""

    def __init__(
        self, request: bytes, marker: bytes, on_text: Callable[[bytes], None] | None = None
    ) -> None:
        self._request = request
        self._marker = marker
        self._on_text = on_text
        self._buffer = b""
        self._upgraded = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def send_text(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(Frame(Opcode.TEXT, text.encode()).serialize(mask=True))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            head, sep, rest = self._buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self._fail(head.split(b"\r\n", 1)[0].decode())
                return
            if b"sec-websocket-extensions" in head.lower():
                self._fail("the server negotiated an extension: frames would be compressed")
                return
            self._upgraded, self._buffer = True, rest
        self._frames()

    def _frames(self) -> None:
        while len(self._buffer) >= 2:
            opcode, length = self._buffer[0] & 0x0F, self._buffer[1] & 0x7F
            offset = 2
            if length == 126:
                (length,), offset = struct.unpack("!H", self._buffer[2:4]), 4
            elif length == 127:
                (length,), offset = struct.unpack("!Q", self._buffer[2:10]), 10
            if len(self._buffer) < offset + length:
                return
            payload = self._buffer[offset : offset + length]
            self._buffer = self._buffer[offset + length :]
            if opcode == Opcode.PING and self.transport is not None:
                self.transport.write(Frame(Opcode.PONG, payload).serialize(mask=True))
            elif opcode == Opcode.CLOSE:
                self._fail(f"closed {payload[:2].hex()} {payload[2:].decode(errors='replace')}")
            elif not self.ready.done():
                if self._marker in payload:
                    self.ready.set_result(None)
            elif self._on_text is not None:
                self._on_text(payload)

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(why))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}")


async def _open(
    port: int,
    token: str | None,
    source: str = "127.0.0.1",
    on_text: Callable[[bytes], None] | None = None,
) -> _RawClient:
    """A socket to 127.0.0.1:`port` from `source` that has seen its auth_ok."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: _RawClient(_upgrade(port, token), b"auth_ok", on_text),
        "127.0.0.1",
        port,
        local_addr=(source, 0),
    )
    await asyncio.wait_for(client.ready, 30)
    return client


# Points of the RSS-against-sockets curve (benchmarks/plots.py draws it).
SCALE_STEPS = 5


def _upgrade(port: int, token: str | None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /web HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        # What browsers offer.
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _hold_sockets(
    port: int, tokens: list[str], count: int, first: int = 0
) -> list[asyncio.Transport]:
    """Open `count` idle sockets to `port` (the `first`-th onwards, for token and source
    address choice); every one has seen its auth_ok."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    transports: list[asyncio.Transport] = []

    async def one(i: int) -> None:
        token = tokens[i % len(tokens)] if tokens else None
        async with gate:
            client = await _open(port, token, f"127.0.0.{2 + i % SOURCE_ADDRESSES}")
        assert client.transport is not None
        transports.append(client.transport)

    await asyncio.gather(*(one(i) for i in range(first, first + count)))
    return transports


async def _settled_rss(pid: int) -> int:
    # Let the server finish its bookkeeping (lease calls, logs) before reading.
    await asyncio.sleep(1.0)
    return _rss_kib(pid)


async def _idle_memory(
    pid: int, port: int, tokens: list[str]
) -> tuple[float, int, int, list[list[int]]]:
    """(KiB per socket, RSS before, RSS holding SOCKETS sockets, [[sockets, RSS KiB]...])
    of the process `pid`, opening the sockets in SCALE_STEPS steps."""
    # One socket first, so lazily built state (imports, caches) is in the "before" figure.
    warm = await _hold_sockets(port, tokens[:1], 1)
    before = await _settled_rss(pid)
    series = [[0, before]]
    transports: list[asyncio.Transport] = []
    step = max(SOCKETS // SCALE_STEPS, 1)
    while len(transports) < SOCKETS:
        count = min(step, SOCKETS - len(transports))
        transports += await _hold_sockets(port, tokens, count, first=len(transports))
        series.append([len(transports), await _settled_rss(pid)])
    holding = series[-1][1]
    for transport in [*transports, *warm]:
        transport.abort()
    return (holding - before) / SOCKETS, before, holding, series


async def _round_trips(
    port: int, token: str | None, frame: Callable[[str], str], rate: float = RATE
) -> Measurement:
    """`rate` requests per second over CLIENTS sockets, open loop, for SECONDS after warm-up."""
    pending: dict[str, float] = {}
    latencies: list[float] = []
    recording_from = 0.0
    all_sent = False
    drained = asyncio.Event()

    def answered(message: bytes) -> None:
        scheduled = pending.pop(json.loads(message)["req_id"], None)
        if scheduled is not None and scheduled >= recording_from:
            latencies.append((time.perf_counter() - scheduled) * 1000)
        if all_sent and not pending:
            drained.set()

    connections = [await _open(port, token, on_text=answered) for _ in range(CLIENTS)]
    begin = time.perf_counter()
    recording_from = begin + WARMUP_SECONDS
    total = int(rate * (WARMUP_SECONDS + SECONDS))
    for i in range(total):
        scheduled = begin + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        req_id = str(uuid.uuid4())
        pending[req_id] = scheduled
        connections[i % CLIENTS].send_text(frame(req_id))
    all_sent = True
    if not pending:
        drained.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drained.wait(), 10)
    lost = len([s for s in pending.values() if s >= recording_from])
    for connection in connections:
        assert connection.transport is not None
        connection.transport.close()
    measured = Measurement("", len(latencies), SECONDS, latencies)
    # Unanswered requests count as infinitely slow.
    measured.latencies_ms.extend([float("inf")] * lost)
    return measured


async def run() -> dict[str, Any]:
    """Measure (b) and (c) beside their echo baselines; write results/gateway_ws.json."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    issuer = _Issuer()
    database = await create_database(NATIVE_POSTGRES_URL, "bench_ws")
    await asyncio.to_thread(authors_migrate.upgrade, database)
    audit_database = await create_database(NATIVE_POSTGRES_URL, "bench_ws_audit")
    await asyncio.to_thread(audit_migrate.upgrade, audit_database)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ws-"))
    rules = workdir / "rules.yaml"
    rules.write_text(RULES)
    ports = {name: free_port() for name in ("authors", "ratelimit", "audit", "gateway", "echo")}
    # Its own change stream: a running stack's gateways must not hear these authors.
    channel = f"bench:ws:{uuid.uuid4().hex}"
    try:
        async with (
            python_module(
                "gatehouse_authors",
                {
                    "AUTHORS_DATABASE_URL": database,
                    "AUTHORS_REDIS_URL": NATIVE_REDIS_URL,
                    "AUTHORS_STREAM": channel,
                    "AUTHORS_GRPC_PORT": str(ports["authors"]),
                    "AUTHORS_METRICS_PORT": str(free_port()),
                    "AUTHORS_MIGRATE_ON_START": "false",
                },
                port_open(ports["authors"]),
            ) as authors,
            python_module(
                "gatehouse_ratelimit",
                {
                    "RATELIMIT_GRPC_PORT": str(ports["ratelimit"]),
                    "RATELIMIT_METRICS_PORT": str(free_port()),
                    "RATELIMIT_REDIS_URL": NATIVE_REDIS_URL,
                    "RATELIMIT_RULES_PATH": str(rules),
                    "RATELIMIT_KEY_PREFIX": f"bench-ws-{uuid.uuid4().hex[:6]}:",
                },
                port_open(ports["ratelimit"]),
            ) as ratelimit,
            python_module(
                "gatehouse_audit",
                {
                    "AUDIT_DATABASE_URL": audit_database,
                    "AUDIT_GRPC_PORT": str(ports["audit"]),
                    "AUDIT_METRICS_PORT": str(free_port()),
                },
                port_open(ports["audit"]),
            ) as audit,
            python_module(
                "gatehouse_gateway",
                {
                    "GATEWAY_HTTP_PORT": str(ports["gateway"]),
                    "GATEWAY_METRICS_PORT": str(free_port()),
                    "GATEWAY_ISSUER": ISSUER,
                    "GATEWAY_JWKS_URL": issuer.jwks_url,
                    "GATEWAY_AUTHORS_TARGET": f"127.0.0.1:{ports['authors']}",
                    "GATEWAY_AUTHORS_AUTHORITY": "",
                    "GATEWAY_RATELIMIT_TARGET": f"127.0.0.1:{ports['ratelimit']}",
                    "GATEWAY_RATELIMIT_AUTHORITY": "",
                    "GATEWAY_AUDIT_TARGET": f"127.0.0.1:{ports['audit']}",
                    "GATEWAY_AUDIT_AUTHORITY": "",
                    "GATEWAY_REDIS_URL": NATIVE_REDIS_URL,
                    "GATEWAY_AUTHORS_STREAM": channel,
                    # No proxy to take it out of rotation: stop without the drain.
                    "GATEWAY_SHUTDOWN_DRAIN_SECONDS": "0",
                },
                port_open(ports["gateway"]),
            ) as gateway,
            child(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "benchmarks.bench_gateway_ws:echo_app",
                    "--port",
                    str(ports["echo"]),
                    # As the gateway serves: no per-message compression.
                    "--ws-per-message-deflate",
                    "false",
                    "--log-level",
                    "warning",
                ],
                probe=port_open(ports["echo"]),
                what="echo app",
            ) as echo,
        ):
            tokens = [issuer.token(f"bench-user-{i}") for i in range(USERS)]
            per_socket, gw_before, gw_holding, gw_series = await _idle_memory(
                gateway.pid, ports["gateway"], tokens
            )
            echo_per_socket, echo_before, echo_holding, echo_series = await _idle_memory(
                echo.pid, ports["echo"], []
            )
            headers = {"Authorization": f"Bearer {tokens[0]}"}
            async with connect(
                f"ws://127.0.0.1:{ports['gateway']}/web", additional_headers=headers
            ) as setup:
                await setup.recv()
                await setup.send(
                    json.dumps(
                        {"pkg_id": 3, "req_id": str(uuid.uuid4()), "data": {"name": "Bench"}}
                    )
                )
                author_id = json.loads(await setup.recv())["data"]["id"]
            request = {"pkg_id": 6, "method": "", "data": {"id": author_id}}

            def get_author(req_id: str) -> str:
                return json.dumps({**request, "req_id": req_id})

            watched = {
                "gateway": gateway.pid,
                "authors": authors.pid,
                "ratelimit": ratelimit.pid,
                "audit": audit.pid,
            }
            cpu_before = {name: process_cpu_seconds(pid) for name, pid in watched.items()}
            load_before = time.process_time()
            full = await _round_trips(ports["gateway"], tokens[0], get_author)
            messages = int(RATE * (WARMUP_SECONDS + SECONDS))
            cpu_us_per_message = {
                name: round((process_cpu_seconds(pid) - cpu_before[name]) / messages * 1e6, 1)
                for name, pid in watched.items()
            }
            cpu_us_per_message["load generator"] = round(
                (time.process_time() - load_before) / messages * 1e6, 1
            )
            full.name = f"gateway_get_author_open_loop_{RATE:.0f}_per_s"
            await asyncio.sleep(SETTLE_SECONDS)  # what the saturated run left in flight
            reduced = await _round_trips(ports["gateway"], tokens[0], get_author, rate=REDUCED_RATE)
            reduced.name = f"gateway_get_author_open_loop_{REDUCED_RATE:.0f}_per_s"
            bare = await _round_trips(ports["echo"], None, get_author)
            bare.name = f"echo_open_loop_{RATE:.0f}_per_s"
    finally:
        issuer.close()
        await drop_database(NATIVE_POSTGRES_URL, database)
        await drop_database(NATIVE_POSTGRES_URL, audit_database)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    p99 = percentile(full.latencies_ms, 99)
    figures = [
        Figure(
            name=f"gateway RSS per idle authenticated socket ({SOCKETS} sockets)",
            value=round(per_socket, 2),
            unit="KiB",
            baseline="bare uvicorn WebSocket echo app, same sockets",
            baseline_value=round(echo_per_socket, 2),
            target=f"<= {SOCKET_TARGET_KIB:.0f} KiB at {SOCKETS} sockets",
            met=per_socket <= SOCKET_TARGET_KIB and SOCKETS >= 10_000,
        ),
        Figure(
            name=f"GET_AUTHOR round trip p99 at {RATE:.0f} msg/s (open loop)",
            value=round(p99, 3),
            unit="ms",
            baseline="bare echo WebSocket p99, same pacing",
            baseline_value=round(percentile(bare.latencies_ms, 99), 3),
            target=f"< {P99_TARGET_MS:.0f} ms",
            met=p99 < P99_TARGET_MS,
        ),
    ]
    result = write_result(
        "gateway_ws",
        figures,
        [full, reduced, bare],
        rss_kib={
            "gateway_before": gw_before,
            "gateway_holding": gw_holding,
            "echo_before": echo_before,
            "echo_holding": echo_holding,
        },
        rss_series={"gateway": gw_series, "bare echo app": echo_series},
        cpu_us_per_message=cpu_us_per_message,
        command="uv run python -m benchmarks gateway_ws",
    )
    for figure in figures:
        print(figure)
    return result
