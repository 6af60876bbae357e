"""The gateway's uvicorn server: on SIGTERM it drains before it stops (docs/api.md, Shutdown).

1. The first SIGTERM (or SIGINT) starts the drain: `/health/live` and `/health/ready`
   answer 503 and new WebSocket upgrades are refused with 503, while every other request
   is still accepted and served, for `shutdown_drain_seconds`. Traefik's health check
   takes the replica out of rotation meanwhile, so no request is sent to a closed port.
2. Open sockets are told 1001 (going away) and reconnect through Traefik to another
   replica; then the port closes and in-flight requests finish, all within one
   `shutdown_grace_seconds`.
3. The lifespan ends: buffered audit events are flushed.

A second signal ends the drain at once.
"""

from __future__ import annotations

import math
import socket
import time
from http import HTTPStatus
from types import FrameType

import structlog
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders

from gatehouse_gateway.auditing import Refusal
from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.errors import ErrorCode
from gatehouse_gateway.http.edge import edge_headers
from gatehouse_gateway.settings import Settings
from gatehouse_gateway.websocket import WebSocketHub
from gatehouse_gateway.websocket.metrics import WS_CONNECTIONS_TOTAL
from gatehouse_kit.logging import sane_request_id

log = structlog.get_logger(__name__)

# The route of a request the HTTP parser refused, in its audit event.
UNPARSED = "<unparsed>"
# How long a socket that refused a request or a frame keeps reading (and dropping) what
# the client still sends, waiting for it to close its side.
LINGER_SECONDS = 5.0


def refusal(status: HTTPStatus, request_id: str) -> bytes:
    """A whole plain-text answer (as Traefik's own refusals are) with the edge headers,
    for a request that never reaches the application; the connection closes after it."""
    body = f"{status.value} {status.phrase}".encode()
    headers = (
        *edge_headers(request_id, ""),
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", str(len(body))),
        ("connection", "close"),
    )
    head = f"HTTP/1.1 {status.value} {status.phrase}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers
    )
    return head.encode() + b"\r\n" + body


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, except that a request its parser refuses gets an answer
    the client actually receives.

    The parser refuses what it does not read as HTTP/1.1, for instance raw bytes above
    0x7F in the request target, which Traefik forwards as they came. uvicorn answers 400
    and closes the socket at once, usually with the request's body still unread; closed
    over unread data, the socket answers with a reset, which can destroy the 400 before
    Traefik has read it, and Traefik then answers the client 502. Here the socket
    half-closes after the answer and reads on, dropping what arrives, until the peer closes
    its side or LINGER_SECONDS have passed.

    The refusal is audited as the application's refusals are (docs/audit.md, Refused
    requests): reason `invalid_data`, route `<unparsed>`, the peer's address as client
    (the request's own headers were not read).
    """

    _lingering = False

    def send_400_response(self, msg: str) -> None:
        request_id = sane_request_id(None)
        context: GatewayContext | None = getattr(getattr(self.app, "state", None), "context", None)
        if context is not None:
            context.refusals.record(
                Refusal(
                    reason=str(ErrorCode.INVALID_DATA),
                    principal=None,
                    action_type=UNPARSED,
                    resource="",
                    ip_address=self.client[0] if self.client else "",
                    user_agent="",
                    request_id=request_id,
                    status=HTTPStatus.BAD_REQUEST.value,
                    error_message=msg,
                    declared_bytes=None,
                    received_bytes=0,
                    duration_ms=0.0,
                    # Nothing of the request was read: no trace context either.
                    trace_id="",
                )
            )
        self.transport.write(refusal(HTTPStatus.BAD_REQUEST, request_id))
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        super().data_received(data)

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()


def handshake_refusal(error: Exception) -> tuple[HTTPStatus, str]:
    """The status of an upgrade request the WebSocket parser refused, and the outcome
    counted in `ws_connections_total`."""
    if isinstance(error, HeaderLineTooLong | TooManyHeaders):
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large"
    if isinstance(error, RequestLineTooLong):
        return HTTPStatus.REQUEST_URI_TOO_LONG, "bad_request"
    return HTTPStatus.BAD_REQUEST, "bad_request"


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, except that a request or a frame it refuses gets an
    answer the client actually receives.

    The upgrade request, which uvicorn's HTTP parser has already accepted, is parsed again
    by the WebSocket library, which refuses a header line over 8 KiB, more than 128 header
    fields, a request line over 8 KiB, or what it does not read as HTTP. uvicorn would
    then neither answer nor close, and the client would wait for its own timeout; here
    the client gets 431, 414 or 400 with the edge headers at once, and the connection
    closes.

    A frame it refuses (over the size limit, or not valid WebSocket) ends with a close
    frame the client actually receives.

    The parser refuses an oversized frame by its header, with most of the frame still
    unread. uvicorn then writes the close (1009) and closes the socket at once; closed
    over unread data, the socket answers with a reset, which can destroy the close
    frame before the client, or a proxy such as Traefik, has read it. Here the socket
    half-closes after the close frame and reads on, dropping what arrives, until the
    client closes its side or LINGER_SECONDS have passed.
    """

    _lingering = False

    def handle_parser_exception(self) -> None:
        assert self.conn.close_sent is not None
        close = self.conn.close_sent
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": close.code, "reason": close.reason}
        )
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_initiated:
            self.refuse_handshake(self.conn.handshake_exc)

    def refuse_handshake(self, error: Exception) -> None:
        """Answer an upgrade request the parser refused (plain text, as Traefik's own 431)
        and close."""
        status, outcome = handshake_refusal(error)
        WS_CONNECTIONS_TOTAL.labels(outcome).inc()
        log.info("ws_upgrade_refused", status=status.value, reason=type(error).__name__)
        # The library's own answer lacks the edge headers: it is replaced.
        self.conn.data_to_send()
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.transport.write(refusal(status, sane_request_id(None)))
        self.transport.close()

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()


def uvicorn_config(settings: Settings, app: FastAPI) -> uvicorn.Config:
    """How the gateway process serves `app` (metrics are served apart)."""
    return uvicorn.Config(
        app,
        host=settings.bind_host,
        port=settings.http_port,
        log_config=None,
        # The edge middleware writes one structured line per request.
        access_log=False,
        proxy_headers=False,
        server_header=False,
        http=HttpProtocol,
        # Above Traefik's idleConnTimeout, so that the proxy is always the side that
        # closes an idle upstream connection (docs/api.md, Keep-alive).
        timeout_keep_alive=settings.keep_alive_seconds,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
        ws=WebSocketProtocol,
        ws_max_size=settings.ws_max_frame_bytes,
        # Frames are small JSON or protobuf messages: compressing them saves little, and
        # a negotiated permessage-deflate (every browser offers it) keeps a zlib state
        # per socket that doubles an idle socket's memory (docs/websocket.md, Frames).
        ws_per_message_deflate=False,
    )


class GracefulServer(uvicorn.Server):
    """A uvicorn server that drains, then says goodbye (1001) to its WebSockets."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self._drain_ends: float | None = None
        self._drain_logged = False

    def _context(self) -> GatewayContext | None:
        context: GatewayContext | None = getattr(self._app.state, "context", None)
        return context

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: the first signal starts the drain, a second one stops now."""
        if self._drain_ends is None and not self.should_exit:
            self.begin_drain()
        else:
            super().handle_exit(sig, frame)

    def begin_drain(self) -> None:
        """Report unhealthy and refuse new sockets, serve on, stop when the drain is over."""
        context = self._context()
        if context is None:
            # Still starting: nothing is in rotation yet, so nothing to drain.
            self.should_exit = True
            return
        context.draining = True
        self._drain_ends = time.monotonic() + context.settings.shutdown_drain_seconds

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (every 0.1 s), which also ends a drain that is over."""
        if self._drain_ends is not None:
            if not self._drain_logged:
                # Logged here rather than in the signal handler, which may interrupt a log write.
                self._drain_logged = True
                log.info("gateway_draining", seconds_left=self._drain_ends - time.monotonic())
            if time.monotonic() >= self._drain_ends:
                self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close sockets with 1001, then let uvicorn close the port, drain and end the lifespan.

        uvicorn alone would close the sockets with 1012 (service restart).
        """
        context = self._context()
        if context is not None:
            context.draining = True
            grace = context.settings.shutdown_grace_seconds
            ends = time.monotonic() + grace
            hub: WebSocketHub | None = getattr(self._app.state, "websocket_hub", None)
            if hub is not None:
                await hub.close_all(grace_seconds=grace)
            # Sockets and in-flight requests share one grace period.
            self.config.timeout_graceful_shutdown = max(1, math.ceil(ends - time.monotonic()))
            log.info("gateway_stopping", grace_left_seconds=ends - time.monotonic())
        await super().shutdown(sockets)
