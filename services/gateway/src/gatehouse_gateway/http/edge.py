"""The edge of every HTTP request and WebSocket upgrade, as one pure ASGI middleware.

Both: request id (the client's if sane) and client IP (trusted proxies), decided here
and only here (`scope["state"]`), and the security and request-id headers of
`edge_headers` on the answer (for a WebSocket: the 101 and any refusal).
HTTP requests also get, without a per-request task: the body size limit, on the bytes
actually received when the route reads the body (after authentication: docs/api.md,
Request bodies), then after the route: rate-limit headers, metrics by route template,
an access log line (no tokens, no query string) and one audit event (a refused request's
without its body, aggregated per client and reason: `gatehouse_gateway.auditing`).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

import structlog
from opentelemetry.trace import Span, StatusCode
from prometheus_client import Counter, Histogram
from starlette.datastructures import MutableHeaders
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse_gateway import client_json
from gatehouse_gateway.auditing import Refusal, audit_event, refusal_reason
from gatehouse_gateway.auth import Principal
from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.errors import (
    UNHANDLED_ERRORS,
    ApiError,
    ErrorCode,
    error_response,
    internal_error,
)
from gatehouse_gateway.http import console, docs
from gatehouse_gateway.http.client_ip import TrustedProxies
from gatehouse_gateway.ratelimiting import RateDecision
from gatehouse_kit.logging import request_id_var, sane_request_id
from gatehouse_kit.tracing import (
    TRACEPARENT_KEY,
    current_trace_id,
    exemplar,
    traced,
    traceparent_var,
    valid_traceparent,
)

log = structlog.get_logger("gatehouse_gateway.access")

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by route template and status code.",
    ["method", "endpoint", "status_code"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer HTTP requests, by route template.",
    ["method", "endpoint"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Requests that match no route are labelled with this instead of their raw path, so a
# scanner cannot blow up the metric's cardinality.
UNMATCHED = "<unmatched>"

_STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"
# The security headers of every answer: set here and nowhere else (Traefik adds none to
# the gateway's answers; docs/api.md, Headers). The docs page and the console have
# policies of their own.
_SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
)
_RAW_SECURITY_HEADERS = tuple((n.encode(), v.encode()) for n, v in _SECURITY_HEADERS)
_RAW_CSP = (b"content-security-policy", _STRICT_CSP.encode())
_RAW_DOCS_CSP = (b"content-security-policy", docs.CSP.encode())
_RAW_CONSOLE_CSP = (b"content-security-policy", console.CSP.encode())
# Probes, documentation and the console's files are not user actions: no audit event for
# them (nor for OPTIONS, a question about the API). The docs and console pages and their
# assets are matched by path, as they are not API routes.
_NOT_AUDITED = frozenset({"/health", "/health/live", "/health/ready", docs.OPENAPI})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The answers to a WebSocket upgrade: the 101 and a refusal's HTTP response.
_UPGRADE_ANSWERS = frozenset({"websocket.accept", "websocket.http.response.start"})


def edge_headers(request_id: str, path: str) -> tuple[tuple[str, str], ...]:
    """`X-Request-ID` and the security headers that every answer carries, HTTP or WebSocket."""
    if path == docs.PATH:
        policy = docs.CSP
    elif console.serves(path):
        policy = console.CSP
    else:
        policy = _STRICT_CSP
    return (("x-request-id", request_id), *_SECURITY_HEADERS, ("content-security-policy", policy))


def _raw_edge_headers(request_id: str, path: str) -> list[tuple[bytes, bytes]]:
    """`edge_headers` as an HTTP answer's raw headers, from the ones encoded at import."""
    if path == docs.PATH:
        policy = _RAW_DOCS_CSP
    elif console.serves(path):
        policy = _RAW_CONSOLE_CSP
    else:
        policy = _RAW_CSP
    return [(b"x-request-id", request_id.encode()), *_RAW_SECURITY_HEADERS, policy]


def _add_headers(message: Message, headers: tuple[tuple[str, str], ...]) -> None:
    message.setdefault("headers", [])
    mutable = MutableHeaders(scope=message)
    for name, value in headers:
        mutable[name] = value


def payload_too_large(limit: int) -> ApiError:
    """413 for a body over `limit` bytes."""
    return ApiError(
        413,
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"request body exceeds {limit} bytes",
        details={"max_bytes": limit},
    )


class EdgeMiddleware:
    """See the module docstring; audit events go to the app's `GatewayContext.audit`."""

    def __init__(
        self, app: ASGIApp, *, trusted_proxies: TrustedProxies, max_body_bytes: int
    ) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await _Exchange(self, scope, receive, send).run()
        elif scope["type"] == "websocket":
            await self._upgrade(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def identify(self, scope: Scope) -> dict[str, str]:
        """Put the request id and the client address on `scope["state"]`; the headers."""
        headers = dict(_raw_headers(scope))
        client = scope.get("client")
        state = scope.setdefault("state", {})
        state["request_id"] = sane_request_id(headers.get("x-request-id"))
        state["client_ip"] = self.trusted_proxies.client_ip(
            client[0] if client else None, headers.get("x-forwarded-for")
        )
        return headers

    async def _upgrade(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket: identified like a request; its upgrade answer gets the edge headers."""
        headers = self.identify(scope)
        request_id: str = scope["state"]["request_id"]
        added = edge_headers(request_id, scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] in _UPGRADE_ANSWERS:
                _add_headers(message, added)
            await send(message)

        token = request_id_var.set(request_id)
        # The socket's messages continue the upgrade's trace (websocket.endpoint).
        trace_token = traceparent_var.set(valid_traceparent(headers.get(TRACEPARENT_KEY)))
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            traceparent_var.reset(trace_token)
            request_id_var.reset(token)


class _Exchange:
    """One request through the edge."""

    def __init__(self, edge: EdgeMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.edge = edge
        self.scope = scope
        self.downstream_receive = receive
        self.downstream_send = send
        self.started = time.perf_counter()
        self.status = 500
        self.response_started = False
        self.received = 0
        self.body = bytearray()
        self.headers = edge.identify(scope)
        self.state: dict[str, Any] = scope["state"]
        self.request_id: str = self.state["request_id"]
        self.client_ip: str = self.state["client_ip"]
        self.span: Span | None = None

    async def run(self) -> None:
        token = request_id_var.set(self.request_id)
        try:
            # A span only when the request is sampled (gatehouse_kit.tracing); named by its
            # route once routed.
            with traced(self.headers.get(TRACEPARENT_KEY), self.scope["method"]) as span:
                self.span = span
                await self._call_app()
        finally:
            request_id_var.reset(token)

    async def _call_app(self) -> None:
        try:
            await self.edge.app(self.scope, self.receive, self.send)
        except Exception:
            log.exception("unhandled_error")
            UNHANDLED_ERRORS.labels("http").inc()
            await self._fail(internal_error())
        finally:
            try:
                self._finish()
            except Exception:
                # Nothing after the answer may reach the server, which would drop the
                # connection (and the next request a proxy sends on it).
                log.exception("edge_finish_failed")
                UNHANDLED_ERRORS.labels("http_after_response").inc()

    async def _fail(self, error: ApiError) -> None:
        self.state["error"] = error
        if self.response_started:
            # Too late for an error response; the server closes the connection.
            return
        await error_response(error)(self.scope, self.receive, self.send)

    async def receive(self) -> Message:
        """The server's receive, for the route: the body is refused (413, an ApiError the
        route's error handler answers) by a declared length over the limit before a byte
        is read, else as soon as the bytes received pass it."""
        limit = self.edge.max_body_bytes
        if self.received == 0:
            declared = self.headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > limit:
                raise payload_too_large(limit)
        message = await self.downstream_receive()
        if message["type"] == "http.request":
            chunk: bytes = message.get("body", b"")
            self.received += len(chunk)
            if self.received > limit:
                raise payload_too_large(limit)
            if self.scope["method"] in _BODY_METHODS:
                self.body += chunk
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
            self.status = message["status"]
            # Appended, not set: no route answers any of these itself.
            raw = _raw_edge_headers(self.request_id, self.scope["path"])
            decision: RateDecision | None = self.state.get("rate_limit")
            if decision is not None:
                raw.extend((n.encode(), v.encode()) for n, v in decision.headers().items())
            message["headers"] = [*message.get("headers", ()), *raw]
        await self.downstream_send(message)

    def _finish(self) -> None:
        elapsed = time.perf_counter() - self.started
        route: BaseRoute | None = self.scope.get("route")
        endpoint = getattr(route, "path", None) or UNMATCHED
        method: str = self.scope["method"]
        HTTP_REQUESTS.labels(method, endpoint, str(self.status)).inc()
        HTTP_DURATION.labels(method, endpoint).observe(elapsed, exemplar())
        if self.span is not None:
            self._describe(self.span, endpoint)
        principal: Principal | None = self.state.get("principal")
        error: ApiError | None = self.state.get("error")
        log.info(
            "http_request",
            method=method,
            endpoint=endpoint,
            path=self.scope["path"],
            status=self.status,
            duration_ms=round(elapsed * 1000, 3),
            client_ip=self.client_ip,
            user_id=principal.user_id if principal else None,
            error_code=str(error.code) if error else None,
        )
        context: GatewayContext | None = getattr(self.scope["app"].state, "context", None)
        if (
            context is None
            or endpoint in _NOT_AUDITED
            or method == "OPTIONS"
            or docs.serves(self.scope["path"])
            or console.serves(self.scope["path"])
        ):
            return
        refused = refusal_reason(self.status, error)
        if refused is not None:
            # Without the body, aggregated per client and reason (docs/audit.md).
            declared = self.headers.get("content-length", "")
            declared_bytes = int(declared) if declared.isascii() and declared.isdigit() else None
            context.refusals.record(
                Refusal(
                    reason=refused,
                    principal=principal,
                    action_type=f"{method} {endpoint}",
                    resource=self.scope["path"],
                    ip_address=self.client_ip,
                    user_agent=self.headers.get("user-agent", ""),
                    request_id=self.request_id,
                    status=self.status,
                    error_message=error.msg if error else "",
                    declared_bytes=declared_bytes,
                    received_bytes=self.received,
                    duration_ms=elapsed * 1000,
                    trace_id=current_trace_id() or "",
                )
            )
            return
        context.audit.enqueue(
            audit_event(
                principal=principal,
                action_type=f"{method} {endpoint}",
                resource=self.scope["path"],
                ip_address=self.client_ip,
                user_agent=self.headers.get("user-agent", ""),
                request_id=self.request_id,
                request_data=self._request_data(),
                response_status=self.status,
                error_message=error.msg if error else None,
                duration_ms=elapsed * 1000,
                trace_id=current_trace_id() or "",
            )
        )

    def _describe(self, span: Span, endpoint: str) -> None:
        """A sampled request's span, by OpenTelemetry's HTTP conventions."""
        method: str = self.scope["method"]
        span.update_name(f"{method} {endpoint}")
        span.set_attributes(
            {
                "http.request.method": method,
                "http.route": endpoint,
                "url.path": self.scope["path"],
                "http.response.status_code": self.status,
                "client.address": self.client_ip,
            }
        )
        if self.status >= 500:
            span.set_status(StatusCode.ERROR)

    def _request_data(self) -> dict[str, Any] | None:
        data: dict[str, Any] = {}
        path_params = self.scope.get("path_params")
        if path_params:
            data["path"] = dict(path_params)
        query = self.scope.get("query_string", b"")
        if query:
            parsed = parse_qs(query.decode("latin-1"))
            data["query"] = {k: v if len(v) > 1 else v[0] for k, v in parsed.items()}
        if self.body:
            try:
                data["body"] = client_json.parse(self.body)
            except client_json.InvalidJson:
                data["body"] = f"<{len(self.body)} bytes, not JSON>"
        return data or None


def _raw_headers(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
