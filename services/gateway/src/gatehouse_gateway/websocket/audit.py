"""Audit events of WebSocket messages: one per handled frame, action type `WS:<NAME>`."""

from __future__ import annotations

import time
from typing import Any

from gatehouse_gateway.auditing import audit_event
from gatehouse_gateway.auth import Principal
from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.errors import WsStatus
from gatehouse_gateway.websocket.session import Peer
from gatehouse_protos.audit.v1 import audit_pb2


def outcome_of(status: WsStatus) -> audit_pb2.Outcome.ValueType:
    """The audit outcome of a response status."""
    if status is WsStatus.OK:
        return audit_pb2.OUTCOME_SUCCESS
    if status is WsStatus.PERMISSION_DENIED:
        return audit_pb2.OUTCOME_PERMISSION_DENIED
    return audit_pb2.OUTCOME_ERROR


def audit_message(
    context: GatewayContext,
    peer: Peer,
    principal: Principal | None,
    *,
    action: str,
    resource: str,
    status: WsStatus,
    request_id: str,
    request_data: Any,
    error_message: str,
    started: float,
) -> None:
    """Hand one message's event to the audit client (never waits; drops are counted there)."""
    context.audit.enqueue(
        audit_event(
            principal=principal,
            action_type=f"WS:{action}",
            resource=resource,
            outcome=outcome_of(status),
            ip_address=peer.ip,
            user_agent=peer.user_agent,
            request_id=request_id,
            request_data=request_data,
            response_status=int(status),
            error_message=error_message,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
    )
