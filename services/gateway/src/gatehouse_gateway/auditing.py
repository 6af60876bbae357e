"""Audit events of gateway requests and messages, in the shape the audit service stores."""

from __future__ import annotations

from typing import Any

from gatehouse_gateway.auth import Principal
from gatehouse_gateway.errors import WsStatus
from gatehouse_kit.redaction import request_data_json
from gatehouse_protos.audit.v1 import audit_pb2


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
) -> audit_pb2.AuditEvent:
    """One audit event of an HTTP request or a WebSocket message.

    `response_status` is the HTTP status or the WebSocket `status_code` (a `WsStatus`);
    the outcome follows from it. `request_data` is redacted here (event id and time are
    set on enqueue). An unauthenticated caller is recorded with empty user fields.
    """
    return audit_pb2.AuditEvent(
        user_id=principal.user_id if principal else "",
        username=principal.username if principal else "",
        user_roles=sorted(principal.roles) if principal else [],
        action_type=action_type,
        resource=resource,
        outcome=outcome_for(response_status),
        ip_address=ip_address,
        user_agent=user_agent,
        request_id=request_id,
        request_data=request_data_json(request_data),
        response_status=int(response_status),
        error_message=error_message or "",
        duration_ms=duration_ms,
    )
