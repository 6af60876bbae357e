"""Refusals on the WebSocket in the audit trail: refused messages, malformed frames,
refused upgrades and authentications are aggregated refusal events without their data."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gatehouse_gateway.websocket.protocol import PkgId
from gatehouse_protos.audit.v1 import audit_pb2


def _buffered(gateway: Any) -> list[audit_pb2.AuditEvent]:
    """The events the gateway's audit client holds (nobody listens at its target)."""
    return list(gateway.context.audit._buffer)


def _refusal(event: audit_pb2.AuditEvent) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(event.request_data)["refusal"]
    return summary


async def test_refused_messages_are_one_event_per_window_with_their_count(
    gateway: Any, issuer: Any, ws: Any
) -> None:
    before = len(_buffered(gateway))
    async with ws(gateway, issuer.token("nobody")) as client:
        for _ in range(5):
            reply = await client.request(PkgId.GET_AUTHORS, {"secret_filter": "kept out"})
            assert reply["status_code"] == 3
        for _ in range(3):
            await client.send_raw("{not json")
            assert (await client.frame())["status_code"] == 2
        events = _buffered(gateway)[before:]
        assert [(e.action_type, _refusal(e)["count"]) for e in events] == [
            ("WS:GET_AUTHORS", 1),
            ("WS:INVALID_FRAME", 1),
        ]
        gateway.context.refusals.sweep(time.monotonic() + 60)
    events = _buffered(gateway)[before:]
    summaries = {(e.action_type, _refusal(e)["count"]) for e in events[2:]}
    assert summaries == {("WS:GET_AUTHORS", 4), ("WS:INVALID_FRAME", 2)}
    denied = events[0]
    assert (denied.outcome, denied.response_status) == (audit_pb2.OUTCOME_PERMISSION_DENIED, 3)
    assert _refusal(denied)["reason"] == "permission_denied"
    assert "kept out" not in denied.request_data
    assert denied.username.startswith("nobody-")


async def test_refused_upgrades_and_authentications_are_audited(gateway: Any, issuer: Any) -> None:
    before = len(_buffered(gateway))
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            gateway.url, additional_headers={"Origin": "https://evil.example"}, open_timeout=5
        ):
            pass
    assert refused.value.response.status_code == 403
    async with connect(
        gateway.url, additional_headers={"Authorization": "Bearer forged"}, open_timeout=5
    ) as connection:
        with pytest.raises(ConnectionClosed) as closed:
            await connection.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4001
    events = _buffered(gateway)[before:]
    assert [(e.action_type, e.response_status, _refusal(e)["reason"]) for e in events] == [
        ("WS:UPGRADE", 403, "permission_denied"),
        ("WS:AUTH", 3, "authentication_failed"),
    ]
    assert events[1].resource == "/web"
    assert events[1].user_id == ""
