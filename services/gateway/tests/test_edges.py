"""What clients notice at the edges: untrusted proxies, an upstream outage and recovery, audit."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client import REGISTRY

from gatehouse_authors.app import build_app as build_authors
from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.http import edge
from gatehouse_kit.grpc_server import GrpcService
from services.gateway.tests.conftest import Upstreams, gateway_settings, running_gateway
from services.gateway.tests.tokens import Realm
from tests.harness.backends import Backend


async def test_forwarded_for_from_an_untrusted_peer_is_ignored_in_the_audit_trail(
    upstreams: Upstreams, redis_server: Backend, realm: Realm
) -> None:
    settings = gateway_settings(upstreams, redis_server.url)
    async with running_gateway(settings, realm, peer=("192.0.2.10", 5555)) as (app, client):
        response = await client.get(
            "/authors",
            headers={
                "Authorization": f"Bearer {realm.token('viewer')}",
                "X-Forwarded-For": "203.0.113.99",
                "X-Request-ID": "xff-untrusted-1",
            },
        )
        assert response.status_code == 200
        context: GatewayContext = app.state.context
    # Leaving the gateway flushed its audit buffer into the audit service.
    assert context.audit.held == 0
    async with running_gateway(settings, realm) as (_, client):
        found = await client.get(
            "/audit-logs",
            params={"action_type": "GET /authors", "username": "viewer"},
            headers={"Authorization": f"Bearer {realm.token('auditor')}"},
        )
    events = [e for e in found.json()["items"] if e["request_id"] == "xff-untrusted-1"]
    assert len(events) == 1
    assert events[0]["ip_address"] == "192.0.2.10"
    assert events[0]["outcome"] == "success"
    assert events[0]["resource"] == "/authors"


async def test_refusals_are_audited_as_permission_denied(
    upstreams: Upstreams, redis_server: Backend, realm: Realm
) -> None:
    settings = gateway_settings(upstreams, redis_server.url)
    async with running_gateway(settings, realm) as (_, client):
        await client.delete(
            "/authors/1",
            headers={
                "Authorization": f"Bearer {realm.token('viewer')}",
                "X-Request-ID": "refused-1",
            },
        )
        await client.get("/authors", headers={"X-Request-ID": "refused-2"})
    async with running_gateway(settings, realm) as (_, client):
        found = await client.get(
            "/audit-logs",
            params={"outcome": "permission_denied"},
            headers={"Authorization": f"Bearer {realm.token('admin')}"},
        )
    by_id = {e["request_id"]: e for e in found.json()["items"]}
    assert by_id["refused-1"]["response_status"] == 403
    assert by_id["refused-1"]["action_type"] == "DELETE /authors/{id}"
    assert by_id["refused-1"]["username"] == "viewer"
    assert by_id["refused-2"]["response_status"] == 401
    assert by_id["refused-2"]["username"] == ""


async def test_a_stopped_upstream_gives_a_prompt_503_then_recovers_without_restart(
    upstreams: Upstreams, redis_server: Backend, realm: Realm
) -> None:
    # A private authors server of this test, so the shared one keeps serving others.
    authors_settings = upstreams.authors_settings.model_copy(update={"grpc_port": 0})
    first = build_authors(authors_settings).grpc_service(authors_settings)
    await first.start()
    port = first.port
    settings = gateway_settings(
        upstreams, redis_server.url, authors_target=f"127.0.0.1:{port}", breaker_open_seconds=0.2
    )
    viewer = {"Authorization": f"Bearer {realm.token('viewer')}"}
    async with running_gateway(settings, realm) as (_, client):
        assert (await client.get("/authors", headers=viewer)).status_code == 200
        await first.stop()
        for _ in range(8):
            started = time.perf_counter()
            response = await client.get("/authors", headers=viewer)
            assert time.perf_counter() - started < 1.5
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "service_unavailable"
            assert response.headers["retry-after"] == "1"
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["services"]["authors"] == "down"

        same_port = authors_settings.model_copy(update={"grpc_port": port})
        second: GrpcService = build_authors(same_port).grpc_service(same_port)
        await second.start()
        try:
            recovered = await _eventually_ok(client, viewer)
            assert recovered.status_code == 200
        finally:
            await second.stop()


async def _eventually_ok(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    # The breaker half-opens after breaker_open_seconds and the channel reconnects with
    # backoff; recovery is a matter of a few attempts, bounded here.
    deadline = time.monotonic() + 10
    while True:
        response = await client.get("/authors", headers=headers)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


async def test_a_failure_after_the_answer_is_counted_and_never_reaches_the_server(
    gateway: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: object) -> None:
        raise RuntimeError("a bug in the access log or the audit event")

    def counted() -> float:
        sample = REGISTRY.get_sample_value(
            "gateway_unhandled_errors_total", {"where": "http_after_response"}
        )
        return sample or 0.0

    monkeypatch.setattr(edge._Exchange, "_finish", fail)
    before = counted()
    # In-process, an exception leaving the app would fail the request here; behind a
    # proxy, the server would drop the connection and the next request sent on it.
    assert (await gateway.get("/health/live")).status_code == 200
    assert (await gateway.get("/health/live")).status_code == 200
    assert counted() == before + 2
