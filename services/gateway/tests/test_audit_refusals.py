"""Refused requests in the audit trail: without their body, at most one event per client,
user, reason and route per window, carrying the count of the refusals it stands for; and
no client input makes an event the audit service cannot store."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from gatehouse_gateway.auditing import Refusal, RefusalAudit, audit_event, refusal_reason
from gatehouse_gateway.auth import Principal
from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.errors import ApiError, ErrorCode
from gatehouse_protos.audit.v1 import audit_pb2
from services.gateway.tests.conftest import Upstreams, gateway_settings, running_gateway
from services.gateway.tests.tokens import Realm
from tests.harness.backends import Backend


class Collected:
    """Stands in for the audit client in unit tests: keeps what is enqueued."""

    def __init__(self) -> None:
        self.events: list[audit_pb2.AuditEvent] = []

    def enqueue(self, event: audit_pb2.AuditEvent) -> bool:
        self.events.append(event)
        return True


def _refusal(n: int = 0, **fields: Any) -> Refusal:
    values: dict[str, Any] = {
        "reason": "authentication_failed",
        "principal": None,
        "action_type": "GET /authors",
        "resource": "/authors",
        "ip_address": "198.51.100.7",
        "user_agent": "scanner",
        "request_id": f"r-{n}",
        "status": 401,
        "error_message": "missing bearer token",
        "declared_bytes": None,
        "received_bytes": 10,
        "duration_ms": 1.0,
        "trace_id": f"{n:032x}",
        **fields,
    }
    return Refusal(**values)


def _aggregator(window: float = 10.0, max_keys: int = 100) -> tuple[RefusalAudit, Collected]:
    collected = Collected()
    audit: Any = collected
    return RefusalAudit(audit, window_seconds=window, max_keys=max_keys), collected


def _summary(event: audit_pb2.AuditEvent) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(event.request_data)["refusal"]
    return summary


def _sample(name: str, reason: str) -> float:
    return REGISTRY.get_sample_value(name, {"reason": reason}) or 0.0


def test_refusals_are_the_documented_statuses() -> None:
    invalid = ApiError(400, ErrorCode.INVALID_DATA, "request body is not valid JSON")
    rule = ApiError(400, ErrorCode.VALIDATION_ERROR, "request validation failed")
    assert refusal_reason(400, invalid) == "invalid_data"
    assert refusal_reason(400, rule) is None
    assert refusal_reason(400, None) is None
    assert [refusal_reason(s, None) for s in (401, 403, 413, 429)] == [
        "authentication_failed",
        "permission_denied",
        "payload_too_large",
        "rate_limit_exceeded",
    ]
    assert [refusal_reason(s, None) for s in (200, 404, 409, 500, 503)] == [None] * 5


def test_the_first_refusal_is_enqueued_at_once_and_the_rest_once_per_window() -> None:
    refusals, collected = _aggregator(window=10.0)
    seen = _sample("gateway_audit_refusals_total", "authentication_failed")
    folded = _sample("gateway_audit_refusals_aggregated_total", "authentication_failed")
    for n in range(50):
        refusals.record(_refusal(n, received_bytes=100))
    assert [e.request_id for e in collected.events] == ["r-0"]
    assert _summary(collected.events[0])["count"] == 1
    refusals.sweep(time.monotonic())  # the window has not ended: nothing more
    assert len(collected.events) == 1

    refusals.sweep(time.monotonic() + 10.0)
    assert len(collected.events) == 2
    last = collected.events[1]
    assert last.request_id == "r-49"
    assert last.trace_id == f"{49:032x}"
    assert last.response_status == 401
    assert last.outcome == audit_pb2.OUTCOME_PERMISSION_DENIED
    assert _summary(last) == {
        "reason": "authentication_failed",
        "count": 49,
        "window_seconds": 10.0,
        "received_bytes": 4900,
        "declared_bytes": None,
    }
    assert _sample("gateway_audit_refusals_total", "authentication_failed") - seen == 50
    folded_now = _sample("gateway_audit_refusals_aggregated_total", "authentication_failed")
    assert folded_now - folded == 49

    # A quiet window closes the key: the next refusal is enqueued at once again.
    refusals.sweep(time.monotonic() + 20.0)
    refusals.sweep(time.monotonic() + 30.0)
    refusals.record(_refusal(99))
    assert [e.request_id for e in collected.events][-1] == "r-99"
    assert len(collected.events) == 3


def test_keys_are_client_user_reason_and_route() -> None:
    refusals, collected = _aggregator()
    editor = Principal(
        user_id="u-editor", username="editor", roles=frozenset({"get-authors"}), expires_at=0
    )
    refusals.record(_refusal(1))
    refusals.record(_refusal(2, ip_address="198.51.100.8"))
    refusals.record(_refusal(3, reason="payload_too_large", status=413, declared_bytes=9000))
    refusals.record(_refusal(4, action_type="POST /authors"))
    refusals.record(_refusal(5, principal=editor, reason="permission_denied", status=403))
    refusals.record(_refusal(6, principal=editor, reason="permission_denied", status=403))
    assert [e.request_id for e in collected.events] == ["r-1", "r-2", "r-3", "r-4", "r-5"]
    assert _summary(collected.events[2])["declared_bytes"] == 9000
    assert collected.events[4].username == "editor"


async def test_close_enqueues_what_is_still_counted() -> None:
    refusals, collected = _aggregator(window=60.0)
    await refusals.start()
    for n in range(3):
        refusals.record(_refusal(n))
    await refusals.close()
    assert [(e.request_id, _summary(e)["count"]) for e in collected.events] == [
        ("r-0", 1),
        ("r-2", 2),
    ]


def test_clients_beyond_the_bound_share_one_key_per_reason_and_route() -> None:
    refusals, collected = _aggregator(max_keys=3)
    for n in range(10):
        refusals.record(_refusal(n, ip_address=f"198.51.100.{n}"))
    assert [e.ip_address for e in collected.events] == [f"198.51.100.{n}" for n in range(3)]
    refusals.sweep(time.monotonic() + 10.0)
    shared = collected.events[-1]
    assert shared.ip_address == "*"
    assert _summary(shared)["count"] == 7
    assert _summary(shared)["clients"] == "many"


def test_no_client_input_makes_an_event_that_cannot_be_stored() -> None:
    event = audit_event(
        principal=None,
        action_type="GET <unmatched>",
        resource="/authors\x00" + "/x" * 5000,
        ip_address="198.51.100.7",
        user_agent="bad\udcffagent\x00",
        request_id="r-1",
        request_data=json.loads('{"name": "\\ud800", "n": "\\u0000"}'),
        response_status=404,
        error_message="not found\x00",
        duration_ms=1.0,
        trace_id="",
    )
    texts = [getattr(event, f.name) for f in event.DESCRIPTOR.fields if f.type == f.TYPE_STRING]
    assert not any("\x00" in text for text in texts)
    event.SerializeToString()
    assert event.resource.startswith("/authors\\u0000/x/x")
    assert len(event.resource) <= 2048
    assert event.user_agent == "bad\\udcffagent\\u0000"
    assert json.loads(event.request_data) == {"name": "\ud800", "n": "\x00"}


def _trace_id(tag: str, n: int) -> str:
    return f"{tag}{n:024x}"


async def _stored(upstreams: Upstreams, request_ids: list[str]) -> dict[str, asyncpg.Record]:
    connection = await asyncpg.connect(upstreams.audit.settings.database_url)
    try:
        rows = await connection.fetch(
            "SELECT * FROM audit_events WHERE request_id = ANY($1::text[])", request_ids
        )
    finally:
        await connection.close()
    return {row["request_id"]: row for row in rows}


async def test_refused_requests_are_audited_without_their_body_and_aggregated(
    upstreams: Upstreams, redis_server: Backend, realm: Realm
) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = gateway_settings(
        upstreams, redis_server.url, max_body_bytes=1000, audit_refusal_window_seconds=0.5
    )
    editor = {"Authorization": f"Bearer {realm.token('editor')}"}
    async with running_gateway(settings, realm, peer=("192.0.2.44", 4000)) as (app, client):
        big = await client.post(
            "/authors",
            content=b'{"name": "' + b"x" * 5000 + b'"}',
            headers={**editor, "X-Request-ID": f"big-{tag}", "content-type": "application/json"},
        )
        assert big.status_code == 413
        broken = await client.post(
            "/authors",
            content=b'{"name": "secret-draft", ',
            headers={**editor, "X-Request-ID": f"json-{tag}", "content-type": "application/json"},
        )
        assert broken.status_code == 400
        assert broken.json()["error"]["code"] == "invalid_data"
        anonymous = [
            await client.post(
                "/authors",
                json={"name": "anonymous"},
                headers={
                    "X-Request-ID": f"anon-{tag}-{n}",
                    "traceparent": f"00-{_trace_id(tag, n)}-{'1' * 16}-00",
                },
            )
            for n in range(20)
        ]
        assert {r.status_code for r in anonymous} == {401}
        await asyncio.sleep(1.6)  # the window ends; the sweep runs every half second here
        context: GatewayContext = app.state.context
    assert context.audit.held == 0

    ids = [f"big-{tag}", f"json-{tag}", *(f"anon-{tag}-{n}" for n in range(20))]
    stored = await _stored(upstreams, ids)
    assert set(stored) == {f"big-{tag}", f"json-{tag}", f"anon-{tag}-0", f"anon-{tag}-19"}
    too_big = json.loads(stored[f"big-{tag}"]["request_data"])
    assert too_big == {
        "refusal": {
            "reason": "payload_too_large",
            "count": 1,
            "window_seconds": 0.5,
            "received_bytes": 0,
            "declared_bytes": 5012,
        }
    }
    assert stored[f"big-{tag}"]["response_status"] == 413
    assert stored[f"big-{tag}"]["ip_address"] == "192.0.2.44"
    invalid = stored[f"json-{tag}"]
    assert "secret-draft" not in invalid["request_data"]
    assert json.loads(invalid["request_data"])["refusal"]["reason"] == "invalid_data"
    assert invalid["action_type"] == "POST /authors"
    first, rest = stored[f"anon-{tag}-0"], stored[f"anon-{tag}-19"]
    assert json.loads(first["request_data"])["refusal"]["count"] == 1
    assert json.loads(rest["request_data"])["refusal"]["count"] == 19
    assert "anonymous" not in rest["request_data"]
    assert (rest["outcome"], rest["response_status"]) == ("permission_denied", 401)
    # Each event keeps the trace id of the request it stands for: the window's, its last.
    assert (first["trace_id"], rest["trace_id"]) == (_trace_id(tag, 0), _trace_id(tag, 19))
    assert stored[f"big-{tag}"]["trace_id"] == ""


@pytest.mark.parametrize("path", ["/authors%00", "/authors/%ED%A0%80", "/authors?q=%00%FF"])
async def test_hostile_paths_beside_ordinary_requests_lose_no_event(
    upstreams: Upstreams, redis_server: Backend, realm: Realm, path: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = gateway_settings(upstreams, redis_server.url)
    viewer = {"Authorization": f"Bearer {realm.token('viewer')}"}
    async with running_gateway(settings, realm) as (_, client):
        answers = await asyncio.gather(
            client.get(path, headers={**viewer, "X-Request-ID": f"hostile-{tag}"}),
            *(
                client.get("/authors", headers={**viewer, "X-Request-ID": f"plain-{tag}-{n}"})
                for n in range(5)
            ),
        )
        assert all(a.status_code < 500 for a in answers)
    ids = [f"hostile-{tag}", *(f"plain-{tag}-{n}" for n in range(5))]
    stored = await _stored(upstreams, ids)
    assert set(stored) == set(ids)
    assert "\x00" not in stored[f"hostile-{tag}"]["resource"]
