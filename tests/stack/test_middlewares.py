"""Every Traefik middleware is attached to a router, and its effect is visible to a client."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx

from tests.harness.stack import Stack

SECURITY_HEADERS = {
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def routers(stack: Stack) -> dict[str, dict[str, Any]]:
    """Traefik's routers by name, from its API."""
    found = httpx.get(f"{stack.dashboard_url}/api/http/routers", timeout=10).json()
    return {router["name"]: router for router in found}


def chain(stack: Stack, router: str) -> list[str]:
    """The middlewares of one file-provider router, without the provider suffix."""
    return [name.split("@")[0] for name in routers(stack)[f"{router}@file"].get("middlewares", [])]


def test_every_defined_middleware_is_used_by_a_router(stack: Stack) -> None:
    middlewares = httpx.get(f"{stack.dashboard_url}/api/http/middlewares", timeout=10).json()
    ours = [m for m in middlewares if m["provider"] == "file"]
    assert len(ours) >= 8
    unused = [m["name"] for m in ours if not m.get("usedBy")]
    assert unused == []
    assert all(m["status"] == "enabled" for m in ours)


def test_only_idempotent_requests_are_retried(stack: Stack) -> None:
    read = routers(stack)["gateway-read@file"]
    assert "Method(`GET`) || Method(`HEAD`)" in read["rule"]
    assert "retry-idempotent" in chain(stack, "gateway-read")
    assert "retry-idempotent" not in chain(stack, "gateway-write")
    assert "retry-idempotent" not in chain(stack, "gateway-websocket")


def test_the_api_routers_carry_breaker_and_in_flight_limit(stack: Stack) -> None:
    for router in ("gateway-read", "gateway-write"):
        middlewares = chain(stack, router)
        assert "gateway-circuit-breaker" in middlewares
        assert "client-in-flight-limit" in middlewares


def test_no_router_to_the_gateway_sets_headers(stack: Stack) -> None:
    # The gateway sets its answers' security headers itself: one place (docs/api.md).
    found = httpx.get(f"{stack.dashboard_url}/api/http/middlewares", timeout=10).json()
    setting_headers = {m["name"].split("@")[0] for m in found if m["type"] == "headers"}
    assert setting_headers == {"keycloak-security-headers"}
    to_gateway = [r for r in routers(stack).values() if r.get("service") == "gateway"]
    assert {r["name"].split("@")[0] for r in to_gateway} >= {
        "gateway-read",
        "gateway-write",
        "gateway-websocket",
        "gateway-docs",
        "gateway-console",
    }
    for router in to_gateway:
        assert not setting_headers & set(chain(stack, router["name"].split("@")[0]))


def test_security_headers_on_public_responses(stack: Stack) -> None:
    # A success, a refusal by the gateway and a write answer alike.
    for method, path in (("GET", "/health/live"), ("GET", "/authors"), ("POST", "/authors")):
        response = httpx.request(method, f"{stack.web_url}{path}", json={}, timeout=10)
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value, (path, header)
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_keycloak_pages_get_transport_headers_but_keep_their_own_csp(stack: Stack) -> None:
    response = httpx.get(
        f"{stack.keycloak_url}/realms/gatehouse/.well-known/openid-configuration", timeout=10
    )
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")
    assert response.headers["x-content-type-options"] == "nosniff"


def test_responses_are_compressed_when_the_client_accepts_gzip(stack: Stack) -> None:
    plain = httpx.get(f"{stack.web_url}/openapi.json", headers={"Accept-Encoding": "identity"})
    gzipped = httpx.get(f"{stack.web_url}/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert plain.status_code == gzipped.status_code == 200
    assert "content-encoding" not in plain.headers
    assert gzipped.headers["content-encoding"] == "gzip"
    # httpx has decoded it: the same document either way.
    assert gzipped.json() == plain.json()


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


def test_request_bodies_beyond_the_edge_limit_never_reach_a_replica(stack: Stack) -> None:
    # Chunked, without Content-Length: the limit counts bytes, it does not trust a header.
    response = httpx.post(
        f"{stack.web_url}/authors",
        content=_chunks(3 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413


def test_https_entrypoint_serves_the_development_certificate(stack: Stack) -> None:
    response = httpx.get(f"{stack.https_url}/health/live", verify=stack.tls_context(), timeout=10)
    assert response.status_code == 200
    assert response.headers["strict-transport-security"].startswith("max-age=")


def _access_log_line(stack: Stack, request_id: str) -> dict[str, Any]:
    """The JSON access-log entry of the public request with `request_id` (waits briefly).

    The gateway passes the id on to its gRPC calls, which Traefik logs too.
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in stack.access_log_lines():
            if request_id in line:
                entry: dict[str, Any] = json.loads(line)
                if entry.get("entryPointName") == "web":
                    return entry
        time.sleep(0.2)
    raise AssertionError(f"no access-log line for {request_id}")


def test_access_log_is_json_without_credentials(native_stack: Stack) -> None:
    request_id = f"access-log-{uuid.uuid4()}"
    httpx.get(
        f"{native_stack.web_url}/authors",
        headers={"X-Request-ID": request_id, "Authorization": "Bearer secret-token-value"},
        timeout=10,
    )
    entry = _access_log_line(native_stack, request_id)
    assert entry["RequestPath"] == "/authors"
    assert entry["RouterName"] == "gateway-read@file"
    assert entry["ServiceName"] == "gateway@file"
    assert "secret-token-value" not in json.dumps(entry)


def test_forwarded_headers_are_believed_from_loopback_only(native_stack: Stack) -> None:
    trusted, untrusted = f"xff-{uuid.uuid4()}", f"xff-{uuid.uuid4()}"
    httpx.get(
        f"{native_stack.web_url}/health/live",
        headers={"X-Forwarded-For": "203.0.113.9", "X-Request-ID": trusted},
        timeout=10,
    )
    # 127.0.0.2 is on this machine but not a trusted proxy.
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as client:
        client.get(
            "http://127.0.0.1:8080/health/live",
            headers={"X-Forwarded-For": "203.0.113.9", "X-Request-ID": untrusted},
            timeout=10,
        )
    assert _access_log_line(native_stack, trusted)["ClientHost"] == "203.0.113.9"
    entry = _access_log_line(native_stack, untrusted)
    assert entry["ClientHost"] == "127.0.0.2"
    assert "request_X-Forwarded-For" not in entry
