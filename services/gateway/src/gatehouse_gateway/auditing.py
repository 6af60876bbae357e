"""Audit events of gateway requests and messages, in the shape the audit service stores.

- `audit_event(...)` builds one event; every text field is made storable on the way
  (`gatehouse_kit.audit_text`: NUL and lone surrogates escaped, each field bounded), so
  no client input can make the audit service refuse an event.
- `RefusalAudit` records refused requests (`refusal_reason`: 400 `invalid_data`, 401,
  403, 413, 429; for WebSocket messages `ws_refusal_reason`: rate limited, permission
  denied, a malformed frame; refused upgrades and authentications of a socket) without
  their body, at most one event per client, user, reason and route per window: the
  first refusal of a key is enqueued at once, the ones after it are counted and, when
  the window ends, enqueued as one event that carries their count (docs/audit.md,
  Refused requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from gatehouse_gateway.auth import Principal
from gatehouse_gateway.errors import ApiError, ErrorCode, WsStatus
from gatehouse_kit.audit_client import AuditClient
from gatehouse_kit.audit_text import storable_field, storable_roles
from gatehouse_kit.redaction import request_data_json
from gatehouse_protos.audit.v1 import audit_pb2

AUDIT_REFUSALS = Counter(
    "gateway_audit_refusals_total",
    "Refused requests recorded in the audit trail, by reason.",
    ["reason"],
)
AUDIT_REFUSALS_AGGREGATED = Counter(
    "gateway_audit_refusals_aggregated_total",
    "Refused requests not audited at once but counted into their window's event, by reason.",
    ["reason"],
)

# The refusals that are aggregated, by HTTP status (a 400 only with `invalid_data`).
_REFUSED_STATUSES = {
    401: str(ErrorCode.AUTHENTICATION_FAILED),
    403: str(ErrorCode.PERMISSION_DENIED),
    413: str(ErrorCode.PAYLOAD_TOO_LARGE),
    429: str(ErrorCode.RATE_LIMIT_EXCEEDED),
}
_INVALID_DATA = str(ErrorCode.INVALID_DATA)
# WebSocket messages that are refusals, by status (and every malformed frame).
_WS_REFUSED_STATUSES = {
    WsStatus.PERMISSION_DENIED: str(ErrorCode.PERMISSION_DENIED),
    WsStatus.RATE_LIMITED: str(ErrorCode.RATE_LIMIT_EXCEEDED),
}
_MALFORMED_FRAME = "INVALID_FRAME"
# The key of refusals from clients beyond `max_keys`: one per reason and route.
_MANY_CLIENTS = "*"


def outcome_for(status: int) -> audit_pb2.Outcome.ValueType:
    """The outcome of an HTTP status or of a WebSocket `status_code` (a `WsStatus`).

    HTTP: success below 400, permission_denied for 401/403, error otherwise.
    WebSocket: success for OK, permission_denied for PERMISSION_DENIED, error otherwise.
    """
    if isinstance(status, WsStatus):
        success, denied = status is WsStatus.OK, status is WsStatus.PERMISSION_DENIED
    else:
        success, denied = status < 400, status in (401, 403)
    if success:
        return audit_pb2.OUTCOME_SUCCESS
    if denied:
        return audit_pb2.OUTCOME_PERMISSION_DENIED
    return audit_pb2.OUTCOME_ERROR


def audit_event(
    *,
    principal: Principal | None,
    action_type: str,
    resource: str,
    ip_address: str,
    user_agent: str,
    request_id: str,
    request_data: Any,
    response_status: int,
    error_message: str | None,
    duration_ms: float,
    trace_id: str,
) -> audit_pb2.AuditEvent:
    """One audit event of an HTTP request or a WebSocket message.

    `response_status` is the HTTP status or the WebSocket `status_code` (a `WsStatus`);
    the outcome follows from it. `request_data` is redacted here (event id and time are
    set on enqueue). An unauthenticated caller is recorded with empty user fields. Every
    text is made storable (module doc). `trace_id` is the request's
    (`gatehouse_kit.tracing.current_trace_id`), "" without a trace context.
    """
    return audit_pb2.AuditEvent(
        user_id=storable_field("user_id", principal.user_id) if principal else "",
        username=storable_field("username", principal.username) if principal else "",
        user_roles=storable_roles(sorted(principal.roles)) if principal else [],
        action_type=storable_field("action_type", action_type),
        resource=storable_field("resource", resource),
        outcome=outcome_for(response_status),
        ip_address=storable_field("ip_address", ip_address),
        user_agent=storable_field("user_agent", user_agent),
        request_id=storable_field("request_id", request_id),
        request_data=storable_field("request_data", request_data_json(request_data)),
        response_status=int(response_status),
        error_message=storable_field("error_message", error_message or ""),
        duration_ms=duration_ms,
        trace_id=trace_id,
    )


def refusal_reason(status: int, error: ApiError | None) -> str | None:
    """Why a request with this answer was refused, or None when it was not a refusal."""
    if status == 400:
        return _INVALID_DATA if error is not None and error.code is ErrorCode.INVALID_DATA else None
    return _REFUSED_STATUSES.get(status)


def ws_refusal_reason(status: WsStatus, action: str) -> str | None:
    """Why a WebSocket message (`WS:<action>`) was refused, or None when it was not."""
    if action == _MALFORMED_FRAME:
        return _INVALID_DATA
    return _WS_REFUSED_STATUSES.get(status)


@dataclass(frozen=True)
class Refusal:
    """One refused request, as much of it as its audit event keeps (never its body)."""

    reason: str
    principal: Principal | None
    action_type: str
    resource: str
    ip_address: str
    user_agent: str
    request_id: str
    status: int
    error_message: str
    declared_bytes: int | None
    received_bytes: int
    duration_ms: float
    trace_id: str


@dataclass
class _Window:
    """A key's window: when it opened and the refusals since its last event."""

    opened: float
    count: int = 0
    received_bytes: int = 0
    declared_bytes: int | None = None
    latest: Refusal | None = None


class RefusalAudit:
    """Refused requests into the audit trail, aggregated per key and window (module doc).

    A key is (client address, user id, reason, route). At most `max_keys` keys are
    tracked; refusals of further clients share one key per reason and route, recorded
    with the client address `*`. `record` never waits; `start` runs the task that closes
    windows, `close` enqueues what is still counted.
    """

    def __init__(self, audit: AuditClient, *, window_seconds: float, max_keys: int) -> None:
        self._audit = audit
        self._window = window_seconds
        self._max_keys = max_keys
        self._windows: dict[tuple[str, str, str, str], _Window] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start closing windows as they end."""
        if self._task is None:
            self._task = asyncio.create_task(self._sweep_forever(), name="audit-refusals")

    async def close(self) -> None:
        """Stop, and enqueue an event for every window that still counts refusals."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.sweep(float("inf"))

    def record(self, refusal: Refusal) -> None:
        """Enqueue `refusal`'s event now, or count it into its key's open window."""
        AUDIT_REFUSALS.labels(refusal.reason).inc()
        user_id = refusal.principal.user_id if refusal.principal else ""
        key = (refusal.ip_address, user_id, refusal.reason, refusal.action_type)
        window = self._windows.get(key)
        if window is None and len(self._windows) >= self._max_keys:
            key = (_MANY_CLIENTS, "", refusal.reason, refusal.action_type)
            window = self._windows.get(key)
            if window is None:
                # The first refusal beyond the bound opens its shared window uncounted.
                self._windows[key] = _Window(opened=time.monotonic())
                window = self._windows[key]
            self._count(window, refusal)
            return
        if window is None:
            self._windows[key] = _Window(opened=time.monotonic())
            self._enqueue(
                refusal,
                count=1,
                received=refusal.received_bytes,
                declared=refusal.declared_bytes,
            )
            return
        self._count(window, refusal)

    def sweep(self, now: float) -> None:
        """Close the windows that ended by `now`: one event for each that counted refusals."""
        for key, window in list(self._windows.items()):
            if now - window.opened < self._window:
                continue
            if window.latest is None:
                del self._windows[key]
                continue
            self._enqueue(
                window.latest,
                count=window.count,
                received=window.received_bytes,
                declared=window.declared_bytes,
                many=key[0] == _MANY_CLIENTS,
            )
            self._windows[key] = _Window(opened=time.monotonic())

    async def _sweep_forever(self) -> None:
        interval = min(self._window, 1.0)
        while True:
            await asyncio.sleep(interval)
            self.sweep(time.monotonic())

    @staticmethod
    def _count(window: _Window, refusal: Refusal) -> None:
        AUDIT_REFUSALS_AGGREGATED.labels(refusal.reason).inc()
        window.count += 1
        window.received_bytes += refusal.received_bytes
        if refusal.declared_bytes is not None:
            window.declared_bytes = max(window.declared_bytes or 0, refusal.declared_bytes)
        window.latest = refusal

    def _enqueue(
        self,
        refusal: Refusal,
        *,
        count: int,
        received: int,
        declared: int | None,
        many: bool = False,
    ) -> None:
        summary: dict[str, Any] = {
            "reason": refusal.reason,
            "count": count,
            "window_seconds": self._window,
            "received_bytes": received,
            "declared_bytes": declared,
        }
        if many:
            summary["clients"] = "many"
        self._audit.enqueue(
            audit_event(
                principal=None if many else refusal.principal,
                action_type=refusal.action_type,
                resource=refusal.resource,
                ip_address=_MANY_CLIENTS if many else refusal.ip_address,
                user_agent=refusal.user_agent,
                request_id=refusal.request_id,
                request_data={"refusal": summary},
                response_status=refusal.status,
                error_message=refusal.error_message,
                duration_ms=refusal.duration_ms,
                trace_id=refusal.trace_id,
            )
        )
