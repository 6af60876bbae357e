"""Steady mixed traffic through Traefik, HTTP and WebSocket, with every answer recorded.

`MixedTraffic` sends author CRUD, audit queries and health probes over HTTP at a fixed
rate (open loop: a slow answer never slows the sending), and keeps a few WebSockets
(JSON and protobuf) sending requests at their own rate. Each request, answer, socket
close and failed connection becomes an `Outcome`, so that a test can ask what happened
in any time window. The chaos suite and the soak (benchmarks/soak.py) both use it.

Every request says it comes from one client address of TEST-NET-2 (198.51.100.0/24) in
`X-Forwarded-For`, which Traefik passes on from loopback as from any trusted proxy: the
traffic is then limited per address like a real client's, and does not use up the
limits of 127.0.0.1 that every other test on this machine shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gatehouse_protos.websocket import websocket_pb2

# Far above every deadline of the gateway (3 s per upstream call, 0.5 s for a rate-limit
# decision, 3 s for JWKS): an answer slower than this is a hang.
CLIENT_TIMEOUT = 20.0
# Error codes of docs/api.md that a 5xx may carry while a dependency is away.
DOCUMENTED_5XX = frozenset({"service_unavailable", "upstream_timeout"})
# WebSocket status_code 7: UNAVAILABLE (the 503/504 of the socket protocol).
WS_OK, WS_ERROR, WS_UNAVAILABLE = 0, 1, 7
# Close codes a client is told to reconnect after: going away (gateway shutdown),
# service restart, try again later (a dependency of the socket is unavailable).
DOCUMENTED_CLOSES = frozenset({1001, 1012, 1013})

Channel = Literal["http", "ws"]


@dataclass(frozen=True)
class Outcome:
    """One request and its answer, or one socket event.

    `status` is the HTTP status or the WebSocket `status_code`, None when nothing came
    back; `code` is the error body's code, `close <n>` for a socket closed under a
    request, or the exception's name for a transport failure.
    """

    channel: Channel
    operation: str
    started: float
    seconds: float
    status: int | None
    code: str | None = None
    service: str | None = None
    request_id: str = ""
    # Answered by a gateway (which audits it), not by the proxy in front of it.
    audited: bool = False

    @property
    def ok(self) -> bool:
        """A success answer."""
        if self.status is None:
            return False
        if self.channel == "http":
            return 200 <= self.status < 300
        return self.status == WS_OK

    @property
    def server_error(self) -> bool:
        """A 5xx, or a WebSocket ERROR/UNAVAILABLE."""
        if self.status is None:
            return False
        if self.channel == "http":
            return self.status >= 500
        return self.status in (WS_ERROR, WS_UNAVAILABLE)

    @property
    def documented_unavailable(self) -> bool:
        """503 service_unavailable / 504 upstream_timeout, or WebSocket UNAVAILABLE."""
        if self.channel == "http":
            return self.status in (503, 504) and self.code in DOCUMENTED_5XX
        return self.status == WS_UNAVAILABLE and self.code in DOCUMENTED_5XX

    def describe(self) -> str:
        """One line for an assertion message."""
        return (
            f"{self.channel} {self.operation} -> {self.status} {self.code or ''}"
            f"{' (' + self.service + ')' if self.service else ''} in {self.seconds:.2f}s"
            f" [{self.request_id}]"
        )


def _error_of(body: Any) -> tuple[str | None, str | None]:
    """(code, details.service) of an error body in the shape of docs/api.md (Errors).

    A /health report naming services that are down counts as `service_unavailable`
    of those services (its documented 503).
    """
    if isinstance(body, dict) and isinstance(body.get("services"), dict):
        down = sorted(name for name, state in body["services"].items() if state != "ok")
        return ("service_unavailable", ",".join(down)) if down else (None, None)
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None, None
    error = body["error"]
    details = error.get("details")
    service = details.get("service") if isinstance(details, dict) else None
    return error.get("code"), service


@dataclass
class _Socket:
    """One WebSocket of the traffic and the requests waiting for their answer."""

    fmt: Literal["json", "protobuf"]
    connection: ClientConnection | None = None
    pending: dict[str, tuple[str, float]] = field(default_factory=dict)


class MixedTraffic:
    """HTTP at `http_rate` requests/s and `sockets` WebSockets at `ws_rate` messages/s each.

    `token` is an access token of a user with every role (the realm's `admin`); call
    `refresh(token)` with a fresh one before it expires on long runs.
    """

    def __init__(
        self,
        web_url: str,
        token: str,
        *,
        http_rate: float = 6.0,
        sockets: int = 2,
        ws_rate: float = 1.0,
        prefix: str = "chaos",
        client_ip: str | None = None,
    ) -> None:
        self.web_url = web_url.rstrip("/")
        self.ws_url = self.web_url.replace("http", "ws", 1) + "/web"
        self._token = token
        self._http_rate = http_rate
        self._ws_rate = ws_rate
        self._prefix = prefix
        self.client_ip = client_ip or f"198.51.100.{random.randrange(1, 255)}"
        self._sockets = [_Socket("json" if i % 2 == 0 else "protobuf") for i in range(sockets)]
        self.outcomes: list[Outcome] = []
        self._authors: list[int] = []
        self._ws_turns = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runners: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._stopping = asyncio.Event()
        # Set (and replaced) at every new outcome, for whoever waits on the outcomes.
        self._changed = asyncio.Event()

    # -- control -------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin sending; returns at once."""
        self._client = httpx.AsyncClient(
            base_url=self.web_url,
            timeout=CLIENT_TIMEOUT,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self._runners = [asyncio.create_task(self._http_loop())]
        self._runners += [asyncio.create_task(self._socket_loop(s)) for s in self._sockets]

    async def stop(self) -> None:
        """Stop sending, wait for every request in flight (each bounded by its timeout)."""
        self._stopping.set()
        await asyncio.gather(*self._runners, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def refresh(self, token: str) -> None:
        """Use `token` from now on, on open sockets too (an auth frame before expiry)."""
        self._token = token
        frame = json.dumps({"type": "auth", "token": f"Bearer {token}"})
        for sock in self._sockets:
            if sock.connection is not None:
                with contextlib.suppress(ConnectionClosed):
                    await sock.connection.send(frame)

    def since(self, started: float, until: float | None = None) -> list[Outcome]:
        """Outcomes of requests started in [started, until)."""
        end = until if until is not None else float("inf")
        return [o for o in self.outcomes if started <= o.started < end]

    async def until(self, predicate: Callable[[list[Outcome]], bool], *, after: float) -> float:
        """Seconds from `after` until `predicate(outcomes since after)` holds.

        Re-checked at every new outcome; bound it with `asyncio.timeout`.
        """
        while not predicate(self.since(after)):
            await self._changed.wait()
        return time.monotonic() - after

    @property
    def request_ids(self) -> set[str]:
        """The request ids of every request a gateway answered (each one audited)."""
        return {o.request_id for o in self.outcomes if o.audited}

    # -- HTTP ----------------------------------------------------------------------------

    async def _http_loop(self) -> None:
        operations = itertools.cycle(self._http_operations())
        interval = 1.0 / self._http_rate
        next_at = time.monotonic()
        while not self._stopping.is_set():
            operation = next(operations)
            self._spawn(operation())
            next_at += interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0.0, next_at - time.monotonic()))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _http_operations(self) -> list[Callable[[], Any]]:
        return [
            self._create,
            lambda: self._http("GET", "/authors", "GET /authors", params={"search": self._prefix}),
            self._read_one,
            lambda: self._http("GET", "/audit-logs", "GET /audit-logs", params={"per_page": 5}),
            self._update,
            lambda: self._http("GET", "/authors/paginated", "GET /authors/paginated"),
            self._delete,
            lambda: self._http("GET", "/health", "GET /health", auth=False, audited=False),
        ]

    async def _http(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        auth: bool = True,
        audited: bool = True,
        **kwargs: Any,
    ) -> httpx.Response | None:
        assert self._client is not None
        request_id = str(uuid.uuid4()) if audited else ""
        headers = {"X-Forwarded-For": self.client_ip}
        if request_id:
            headers["X-Request-ID"] = request_id
        if auth:
            headers["Authorization"] = f"Bearer {self._token}"
        started = time.monotonic()
        try:
            response = await self._client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as error:
            self._record("http", operation, started, None, type(error).__name__, None, request_id)
            return None
        try:
            code, service = _error_of(response.json())
        except ValueError:
            code, service = (None, None) if response.is_success else ("not json", None)
        # A gateway echoes the request id; an answer without it came from the proxy. A
        # refusal is audited in an aggregated event, which keeps one request id of several
        # (docs/audit.md, Refused requests).
        audited = (
            bool(request_id)
            and response.headers.get("x-request-id") == request_id
            and not _is_refusal(response.status_code, code)
        )
        self._record(
            "http", operation, started, response.status_code, code, service, request_id, audited
        )
        return response

    async def _create(self) -> None:
        response = await self._http(
            "POST", "/authors", "POST /authors", json={"name": f"{self._prefix}-{uuid.uuid4()}"}
        )
        if response is not None and response.status_code == 201:
            self._authors.append(int(response.json()["id"]))

    async def _read_one(self) -> None:
        author = self._authors[-1] if self._authors else 1
        await self._http("GET", f"/authors/{author}", "GET /authors/{id}")

    async def _update(self) -> None:
        if self._authors:
            author = self._authors[-1]
            name = f"{self._prefix}-{uuid.uuid4()}"
            await self._http("PUT", f"/authors/{author}", "PUT /authors/{id}", json={"name": name})

    async def _delete(self) -> None:
        # Keep a few authors for the reads; remove the oldest so the table stays small.
        if len(self._authors) > 3:
            author = self._authors.pop(0)
            await self._http("DELETE", f"/authors/{author}", "DELETE /authors/{id}")

    # -- WebSocket -----------------------------------------------------------------------

    async def _socket_loop(self, sock: _Socket) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                sock.connection = await websockets.connect(
                    f"{self.ws_url}?format={sock.fmt}",
                    additional_headers={
                        "Authorization": f"Bearer {self._token}",
                        "X-Forwarded-For": self.client_ip,
                    },
                    open_timeout=CLIENT_TIMEOUT,
                    close_timeout=5,
                )
                await self._await_auth_ok(sock.connection)
            except (OSError, TimeoutError, InvalidStatus, ConnectionClosed) as error:
                status, code, service = _refusal(error)
                self._record("ws", "connect", started, status, code, service, "")
                sock.connection = None
                await self._pause(0.5)
                continue
            self._record("ws", "connect", started, 101, None, None, "")
            await self._serve_socket(sock, sock.connection)
            sock.connection = None
            await self._pause(0.2)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _await_auth_ok(self, connection: ClientConnection) -> None:
        async with asyncio.timeout(CLIENT_TIMEOUT):
            frame = await connection.recv()
        if not isinstance(frame, str) or json.loads(frame).get("type") != "auth_ok":
            raise ConnectionClosed(None, None)

    async def _serve_socket(self, sock: _Socket, connection: ClientConnection) -> None:
        reader = asyncio.create_task(self._read_socket(sock, connection))
        interval = 1.0 / self._ws_rate
        try:
            while not self._stopping.is_set() and not reader.done():
                await self._send_request(sock, connection)
                await asyncio.wait(
                    [reader, asyncio.create_task(self._stopping.wait())],
                    timeout=interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if not reader.done():
                # Let the last answers arrive, then say goodbye.
                await self._drain(sock)
                await connection.close()
        finally:
            await asyncio.gather(reader, return_exceptions=True)
            self._expire(sock, connection.close_code)

    async def _drain(self, sock: _Socket) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLIENT_TIMEOUT):
                while sock.pending:
                    await self._changed.wait()

    async def _send_request(self, sock: _Socket, connection: ClientConnection) -> None:
        pkg_id, operation, data = self._next_ws_request()
        req_id = str(uuid.uuid4())
        sock.pending[req_id] = (operation, time.monotonic())
        frame: str | bytes
        if sock.fmt == "json":
            frame = json.dumps({"pkg_id": pkg_id, "req_id": req_id, "method": "", "data": data})
        else:
            frame = websocket_pb2.Request(
                pkg_id=pkg_id, req_id=req_id, data_json=json.dumps(data)
            ).SerializeToString()
        with contextlib.suppress(ConnectionClosed):
            await connection.send(frame)

    def _next_ws_request(self) -> tuple[int, str, dict[str, Any]]:
        """(pkg_id, operation, data): reads and creates in turn."""
        turn = next(self._ws_turns) % 3
        if turn == 0:
            return 1, "ws GET_AUTHORS", {"search": self._prefix}
        if turn == 1:
            return 6, "ws GET_AUTHOR", {"id": self._authors[-1] if self._authors else 1}
        return 3, "ws CREATE_AUTHOR", {"name": f"{self._prefix}-ws-{uuid.uuid4()}"}

    async def _read_socket(self, sock: _Socket, connection: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in connection:
                answer = _ws_answer(frame)
                if answer is None:
                    continue
                req_id, status, code, service = answer
                if req_id not in sock.pending:
                    continue
                operation, started = sock.pending.pop(req_id)
                # Refused messages (3, 6) are audited in aggregated events.
                audited = status not in (3, 6)
                self._record("ws", operation, started, status, code, service, req_id, audited)

    def _expire(self, sock: _Socket, close_code: int | None) -> None:
        """Requests left unanswered when a socket closed."""
        for req_id, (operation, started) in sock.pending.items():
            self._record("ws", operation, started, None, f"close {close_code}", None, req_id)
        sock.pending.clear()
        if not self._stopping.is_set():
            self._record("ws", "close", time.monotonic(), None, f"close {close_code}", None, "")

    def _record(
        self,
        channel: Channel,
        operation: str,
        started: float,
        status: int | None,
        code: str | None,
        service: str | None,
        request_id: str,
        audited: bool = False,
    ) -> None:
        self.outcomes.append(
            Outcome(
                channel,
                operation,
                started,
                time.monotonic() - started,
                status,
                code,
                service,
                request_id,
                audited,
            )
        )
        self._changed.set()
        self._changed = asyncio.Event()


def _refusal(error: BaseException) -> tuple[int | None, str, str | None]:
    """(HTTP status, code, service) of a failed socket opening."""
    if isinstance(error, InvalidStatus):
        try:
            code, service = _error_of(json.loads(error.response.body or b""))
        except ValueError:
            code, service = "not json", None
        return error.response.status_code, code or "no error body", service
    if isinstance(error, ConnectionClosed) and error.rcvd is not None:
        return None, f"close {error.rcvd.code}", None
    return None, type(error).__name__, None


def _ws_answer(frame: str | bytes) -> tuple[str, int, str | None, str | None] | None:
    """(req_id, status_code, error code, details.service) of a response frame, else None."""
    if isinstance(frame, bytes):
        message = websocket_pb2.Response()
        message.ParseFromString(frame)
        data = json.loads(message.data_json) if message.data_json else None
        req_id, status = message.req_id, message.status_code
    else:
        obj = json.loads(frame)
        if "status_code" not in obj:
            return None  # auth_ok or a broadcast
        req_id, status, data = obj.get("req_id") or "", obj["status_code"], obj.get("data")
    if status == WS_OK or not isinstance(data, dict):
        return req_id, status, None, None
    details = data.get("details")
    service = details.get("service") if isinstance(details, dict) else None
    return req_id, status, data.get("code"), service


def _is_refusal(status: int, code: str | None) -> bool:
    """An answer the gateway audits only in aggregate (docs/audit.md, Refused requests)."""
    return status in (401, 403, 413, 429) or (status == 400 and code == "invalid_data")
