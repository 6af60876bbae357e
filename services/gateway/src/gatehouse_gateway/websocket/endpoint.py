"""The `/web` WebSocket: upgrade checks, authentication, the message loop, and refreshes.

Order of a connection (docs/websocket.md tells clients the same):
1. At the upgrade: Origin against the allow-list, `format`, and no token in the
   query string; refusals are HTTP answers (403/400) with the usual error body.
2. Authentication: the upgrade's `Authorization: Bearer` header, else a first text frame
   `{"type": "auth", "token": "Bearer <jwt>"}` within the auth timeout (4001 / 4002).
3. A connection lease of the user (`ws_connections`); refused: 1008.
4. `{"type": "auth_ok"}`, then requests until the client leaves, the token expires
   (4001 "token expired") or a limit closes the socket.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.types import Message

from gatehouse_gateway.auditing import Refusal, audit_event, refusal_reason, ws_refusal_reason
from gatehouse_gateway.auth import Principal
from gatehouse_gateway.context import GatewayContext, client_ip, gateway_context
from gatehouse_gateway.errors import (
    UNHANDLED_ERRORS,
    ApiError,
    ErrorCode,
    WsStatus,
    error_response,
    invalid_document,
    permission_denied,
)
from gatehouse_gateway.rbac import authorize, rate_limit_tier
from gatehouse_gateway.websocket.handlers import HANDLERS, Call, resource
from gatehouse_gateway.websocket.hub import WebSocketHub
from gatehouse_gateway.websocket.metrics import (
    WS_CONNECTIONS_ACTIVE,
    WS_CONNECTIONS_TOTAL,
    WS_MESSAGES_RECEIVED,
)
from gatehouse_gateway.websocket.protocol import (
    CODECS,
    AuthFrame,
    Frame,
    JsonCodec,
    MalformedFrame,
    Request,
    auth_ok,
)
from gatehouse_gateway.websocket.session import (
    CLOSE_AUTH_FAILED,
    CLOSE_AUTH_TIMEOUT,
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    Peer,
    Session,
)
from gatehouse_kit.logging import request_id_var
from gatehouse_kit.tracing import current_trace_id, traced, traceparent_var

log = structlog.get_logger(__name__)

router = APIRouter()

# More malformed frames than this within the window close the socket with 1008.
MALFORMED_LIMIT = 10
MALFORMED_WINDOW_SECONDS = 60.0
_QUERY_TOKEN_KEYS = frozenset({"token", "access_token", "authorization", "jwt"})


class _Closed(Exception):
    """The socket was closed during authentication (the reason is already sent)."""


def _hub(websocket: WebSocket) -> WebSocketHub:
    hub: WebSocketHub = websocket.app.state.websocket_hub
    return hub


def _peer(websocket: WebSocket) -> Peer:
    return Peer(ip=client_ip(websocket), user_agent=websocket.headers.get("user-agent", ""))


def _origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    # Browsers always send Origin; other clients may not, and cannot be cross-site.
    return origin is None or "*" in allowed or origin.rstrip("/") in allowed


def _frame_of(message: Message) -> Frame | None:
    text = message.get("text")
    if text is not None:
        return str(text)
    data = message.get("bytes")
    return bytes(data) if data is not None else None


def _too_big(frame: Frame, limit: int) -> bool:
    if isinstance(frame, bytes):
        return len(frame) > limit
    # A character is at most 4 UTF-8 bytes: only long texts need encoding to be sure.
    return len(frame) * 4 > limit and len(frame.encode()) > limit


# Closes before the session that are refusals: (reason, action, status) of their audit event.
_CLOSE_REFUSALS = {
    "auth_failed": ("authentication_failed", "AUTH", WsStatus.PERMISSION_DENIED),
    "auth_timeout": ("authentication_failed", "AUTH", WsStatus.PERMISSION_DENIED),
    "connection_limit": ("rate_limit_exceeded", "CONNECT", WsStatus.RATE_LIMITED),
}


def _audit_refusal(websocket: WebSocket, reason: str, action: str, status: int, msg: str) -> None:
    """A refused upgrade or authentication, into the aggregated refusal events."""
    peer = _peer(websocket)
    gateway_context(websocket).refusals.record(
        Refusal(
            reason=reason,
            principal=None,
            action_type=f"WS:{action}",
            resource="/web",
            ip_address=peer.ip,
            user_agent=peer.user_agent,
            request_id=websocket.scope.get("state", {}).get("request_id", ""),
            status=status,
            error_message=msg,
            declared_bytes=None,
            received_bytes=0,
            duration_ms=0.0,
            trace_id=current_trace_id() or "",
        )
    )


async def _refuse_upgrade(websocket: WebSocket, error: ApiError, status: str) -> None:
    WS_CONNECTIONS_TOTAL.labels(status).inc()
    refused = refusal_reason(error.status, error)
    if refused is not None:
        _audit_refusal(websocket, refused, "UPGRADE", error.status, error.msg)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(error))
    else:
        await websocket.close(CLOSE_POLICY_VIOLATION, error.msg)


async def _close(websocket: WebSocket, code: int, reason: str, status: str) -> _Closed:
    WS_CONNECTIONS_TOTAL.labels(status).inc()
    refusal = _CLOSE_REFUSALS.get(status)
    if refusal is not None:
        _audit_refusal(websocket, refusal[0], refusal[1], refusal[2], reason)
    await websocket.close(code, reason)
    return _Closed(reason)


def _bearer_header(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def _verify(websocket: WebSocket, context: GatewayContext, token: str | None) -> Principal:
    if token is None:
        raise await _close(websocket, CLOSE_AUTH_FAILED, "malformed auth frame", "auth_failed")
    try:
        return await context.verifier.verify(token)
    except ApiError as error:
        if error.status >= 500:
            raise await _close(
                websocket, CLOSE_TRY_AGAIN_LATER, "identity provider unavailable", "unavailable"
            ) from None
        raise await _close(websocket, CLOSE_AUTH_FAILED, error.msg, "auth_failed") from None


async def _authenticate(websocket: WebSocket, context: GatewayContext) -> Principal:
    """The socket's principal from its header or first frame; raises _Closed."""
    header = websocket.headers.get("authorization")
    if header is not None:
        return await _verify(websocket, context, _bearer_header(header))
    settings = context.settings
    try:
        message = await asyncio.wait_for(
            websocket.receive(), timeout=settings.ws_auth_timeout_seconds
        )
    except TimeoutError:
        raise await _close(
            websocket, CLOSE_AUTH_TIMEOUT, "authentication timeout", "auth_timeout"
        ) from None
    if message["type"] == "websocket.disconnect":
        WS_CONNECTIONS_TOTAL.labels("auth_failed").inc()
        raise _Closed("client left")
    frame = _frame_of(message)
    if frame is not None and _too_big(frame, settings.ws_max_frame_bytes):
        raise await _close(websocket, CLOSE_TOO_BIG, "frame too large", "auth_failed")
    WS_MESSAGES_RECEIVED.inc()
    try:
        # Auth frames are JSON text in every format.
        decoded = JsonCodec().decode(frame) if isinstance(frame, str) else None
    except MalformedFrame:
        decoded = None
    if not isinstance(decoded, AuthFrame):
        raise await _close(websocket, CLOSE_AUTH_FAILED, "malformed auth frame", "auth_failed")
    return await _verify(websocket, context, decoded.token)


def _forget_credentials(websocket: WebSocket) -> None:
    """Drop the verified Authorization header from the socket's ASGI scope.

    A socket may stay open for hours and never needs its upgrade's token again (a
    refresh comes as a frame); the scope's copy would cost each idle socket the size of
    the token. uvicorn keeps a parsed copy of the handshake of its own, out of reach.
    """
    headers = websocket.scope["headers"]
    # In place: starlette's Headers of this socket share the list.
    headers[:] = [(name, value) for name, value in headers if name != b"authorization"]


@router.websocket("/web")
async def web(websocket: WebSocket) -> None:
    """The `/web` WebSocket endpoint (protocol: docs/websocket.md)."""
    context = gateway_context(websocket)
    settings = context.settings
    hub = _hub(websocket)
    if not _origin_allowed(websocket.headers.get("origin"), settings.ws_allowed_origins):
        error = ApiError(403, ErrorCode.PERMISSION_DENIED, "origin not allowed")
        await _refuse_upgrade(websocket, error, "origin_refused")
        return
    fmt = websocket.query_params.get("format", "json")
    codec = CODECS.get(fmt)
    if codec is None:
        error = ApiError(400, ErrorCode.INVALID_DATA, "format must be json or protobuf")
        await _refuse_upgrade(websocket, error, "bad_request")
        return
    if context.draining:
        await _refuse_upgrade(websocket, _draining(), "unavailable")
        return
    if len(hub.sessions) >= settings.ws_max_connections:
        error = ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "connection capacity reached")
        await _refuse_upgrade(websocket, error, "at_capacity")
        return
    await websocket.accept()
    try:
        if _QUERY_TOKEN_KEYS & {key.lower() for key in websocket.query_params}:
            raise await _close(
                websocket,
                CLOSE_AUTH_FAILED,
                "tokens in the query string are refused",
                "auth_failed",
            )
        principal = await _authenticate(websocket, context)
    except _Closed:
        return
    session = Session(
        websocket,
        codec,
        principal,
        queue_size=settings.ws_send_queue_size,
        peer=_peer(websocket),
    )
    _forget_credentials(websocket)
    try:
        lease = await context.rate_limiter.acquire_connection(
            principal.user_id, session.lease_id, rate_limit_tier(principal)
        )
    except ApiError:
        await session.finish()
        await _close(
            websocket, CLOSE_TRY_AGAIN_LATER, "connection limits unavailable", "unavailable"
        )
        return
    if not lease.granted:
        await session.finish()
        await _close(websocket, CLOSE_POLICY_VIOLATION, "too many connections", "connection_limit")
        return
    WS_CONNECTIONS_TOTAL.labels("authenticated").inc()
    WS_CONNECTIONS_ACTIVE.inc()
    hub.add(session, lease.ttl_seconds)
    try:
        session.offer(auth_ok(int(principal.expires_at)))
        await _serve(session, context, hub)
    except Exception:
        # A bug, never left to the server (which would drop the connection without a
        # close frame): the socket is closed 1011 after what is already queued.
        log.exception("ws_failed")
        UNHANDLED_ERRORS.labels("ws_socket").inc()
        session.close_soon(CLOSE_INTERNAL_ERROR, "internal error")
        await session.flushed()
    finally:
        hub.remove(session)
        WS_CONNECTIONS_ACTIVE.dec()
        await session.finish()
        try:
            await context.rate_limiter.release_connection(principal.user_id, session.lease_id)
        except ApiError as error:
            log.warning("ws_lease_release_failed", code=str(error.code))


def _draining() -> ApiError:
    return ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "gateway is shutting down")


async def _serve(session: Session, context: GatewayContext, hub: WebSocketHub) -> None:
    limit = context.settings.ws_max_frame_bytes
    dispatcher = _Dispatcher(session, context, hub)
    while True:
        message = await session.websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        frame = _frame_of(message)
        # After a close was sent, frames in flight are read and dropped until the
        # client answers the close.
        if frame is None or session.closing:
            continue
        WS_MESSAGES_RECEIVED.inc()
        if _too_big(frame, limit):
            session.close_soon(CLOSE_TOO_BIG, "frame too large")
            continue
        await dispatcher.handle(frame)


class _Dispatcher:
    """Answers the frames of one socket, in order."""

    def __init__(
        self,
        session: Session,
        context: GatewayContext,
        hub: WebSocketHub,
    ) -> None:
        self._session = session
        self._context = context
        self._hub = hub
        # When malformed frames arrived, within the window; created by the first one.
        self._malformed: collections.deque[float] | None = None
        self._call = Call(
            context.upstreams, context.author_cache, self._subscribe, self._unsubscribe
        )

    async def _subscribe(self, offset: str | None) -> dict[str, Any]:
        if offset is None:
            self._hub.subscribe(self._session)
            return {"subscribed": True}
        return await self._hub.subscribe_from(self._session, offset)

    def _unsubscribe(self) -> None:
        self._hub.unsubscribe(self._session)

    async def handle(self, frame: Frame) -> None:
        session = self._session
        started = time.perf_counter()
        try:
            decoded = session.codec.decode(frame)
        except MalformedFrame as bad:
            self._reply_malformed(bad, started)
            return
        except Exception:
            # A failure the codec did not foresee is still about the client's frame: it
            # is answered like any unreadable frame, and the socket stays open.
            log.exception("ws_frame_unreadable")
            UNHANDLED_ERRORS.labels("ws_frame").inc()
            self._reply_malformed(MalformedFrame("frame could not be read"), started)
            return
        if isinstance(decoded, AuthFrame):
            await self._refresh(decoded, started)
            return
        token = request_id_var.set(decoded.req_id)
        try:
            # Each message is a span of the upgrade's trace when that is sampled (at the
            # edge's ratio when the upgrade came without one); its calls carry it on.
            with traced(traceparent_var.get(), f"WS {decoded.pkg_id.name}") as span:
                if span is not None:
                    span.set_attributes(
                        {
                            "gatehouse.ws.pkg_id": int(decoded.pkg_id),
                            "gatehouse.ws.req_id": decoded.req_id,
                        }
                    )
                await self._answer(decoded, started)
        finally:
            request_id_var.reset(token)

    def _audit(
        self,
        *,
        action: str,
        resource: str,
        status: WsStatus,
        request_id: str,
        request_data: Any,
        error_message: str,
        started: float,
    ) -> None:
        """Hand one message's event (`WS:<action>`) to the audit client; never waits.

        A refusal (rate limited, permission denied, a malformed frame) goes without its
        data to the aggregated refusal events instead.
        """
        session = self._session
        refused = ws_refusal_reason(status, action)
        if refused is not None:
            self._context.refusals.record(
                Refusal(
                    reason=refused,
                    principal=session.principal,
                    action_type=f"WS:{action}",
                    resource=resource,
                    ip_address=session.peer.ip,
                    user_agent=session.peer.user_agent,
                    request_id=request_id,
                    status=status,
                    error_message=error_message,
                    declared_bytes=None,
                    received_bytes=0,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    trace_id=current_trace_id() or "",
                )
            )
            return
        self._context.audit.enqueue(
            audit_event(
                principal=session.principal,
                action_type=f"WS:{action}",
                resource=resource,
                ip_address=session.peer.ip,
                user_agent=session.peer.user_agent,
                request_id=request_id,
                request_data=request_data,
                response_status=status,
                error_message=error_message,
                duration_ms=(time.perf_counter() - started) * 1000,
                trace_id=current_trace_id() or "",
            )
        )

    def _count_malformed(self) -> None:
        now = time.monotonic()
        if self._malformed is None:
            self._malformed = collections.deque()
        malformed = self._malformed
        malformed.append(now)
        while malformed and malformed[0] < now - MALFORMED_WINDOW_SECONDS:
            malformed.popleft()
        if len(malformed) > MALFORMED_LIMIT:
            self._session.close_soon(CLOSE_POLICY_VIOLATION, "too many malformed frames")

    def _reply_malformed(self, bad: MalformedFrame, started: float) -> None:
        session = self._session
        error = ApiError(400, ErrorCode.INVALID_DATA, bad.msg)
        session.offer(
            session.codec.response(bad.pkg_id, bad.req_id, WsStatus.INVALID_DATA, error.payload())
        )
        self._audit(
            action="INVALID_FRAME",
            resource="/web",
            status=WsStatus.INVALID_DATA,
            request_id=bad.req_id or "",
            request_data=None,
            error_message=bad.msg,
            started=started,
        )
        self._count_malformed()

    async def _refresh(self, auth: AuthFrame, started: float) -> None:
        """A new token on an open socket: same user, later expiry; else 4001."""
        session = self._session
        status, reason = WsStatus.OK, ""
        principal: Principal | None = None
        if auth.token is None:
            status, reason = WsStatus.INVALID_DATA, "malformed auth frame"
        else:
            try:
                principal = await self._context.verifier.verify(auth.token)
            except ApiError as error:
                status, reason = error.ws_status, error.msg
        if principal is not None and principal.user_id != session.principal.user_id:
            status, reason = WsStatus.PERMISSION_DENIED, "token belongs to another user"
        self._audit(
            action="AUTH",
            resource="/web",
            status=status,
            request_id="",
            request_data=None,
            error_message=reason,
            started=started,
        )
        if principal is None or status is not WsStatus.OK:
            session.close_soon(CLOSE_AUTH_FAILED, reason)
            return
        session.reauthenticate(principal)
        session.offer(auth_ok(int(principal.expires_at)))

    async def _answer(self, request: Request, started: float) -> None:
        session = self._session
        status, data, meta = await self._outcome(request)
        session.offer(session.codec.response(request.pkg_id, request.req_id, status, data, meta))
        self._audit(
            action=request.pkg_id.name,
            resource=resource(request.pkg_id, request.data),
            status=status,
            request_id=request.req_id,
            request_data=request.data,
            error_message=data.get("msg", "") if status is not WsStatus.OK else "",
            started=started,
        )

    async def _outcome(self, request: Request) -> tuple[WsStatus, Any, dict[str, Any] | None]:
        """(status_code, data, meta) of one request."""
        session = self._session
        principal = session.principal
        handler = HANDLERS[request.pkg_id]
        try:
            decision = await self._context.rate_limiter.check_ws_message(
                principal.user_id, rate_limit_tier(principal)
            )
            if not decision.allowed:
                return WsStatus.RATE_LIMITED, decision.error().payload(), None
            if not authorize(principal, handler.role):
                return WsStatus.PERMISSION_DENIED, permission_denied(handler.role).payload(), None
            try:
                data = handler.schema.model_validate(request.data)
            except ValidationError as invalid:
                self._count_malformed()
                error = invalid_document(invalid, "data", "data validation failed")
                return WsStatus.INVALID_DATA, error.payload(), None
            outcome = await handler.run(self._call, data)
        except ApiError as error:
            return error.ws_status, error.payload(), None
        except Exception:
            log.exception("ws_handler_failed", pkg_id=int(request.pkg_id))
            UNHANDLED_ERRORS.labels("ws_message").inc()
            internal = ApiError(500, ErrorCode.INTERNAL_ERROR, "internal error")
            return internal.ws_status, internal.payload(), None
        return WsStatus.OK, outcome.data, outcome.meta
