"""The edges of a request on the real path: forged tokens, request ids, security headers."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
import websockets

from tests.e2e.conftest import DEV_ORIGIN, Tokens
from tests.harness.stack import Stack
from tests.sre.prometheus import poll

# Set by the gateway on every answer (gatehouse_gateway.http.edge), by nothing else: each
# comes once.
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# Audit events are written in batches, a moment after the request.
AUDIT_WITHIN_SECONDS = 20.0


def altered_signature(token: str) -> str:
    """`token` with one character in the middle of its signature changed."""
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    return f"{header}.{payload}.{signature[:middle]}{swapped}{signature[middle + 1 :]}"


async def test_a_keycloak_token_with_an_altered_signature_is_refused(
    web: httpx.AsyncClient, tokens: Tokens
) -> None:
    forged = altered_signature(await tokens.get("admin"))
    response = await web.get("/authors", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "authentication_failed"
    assert response.headers["WWW-Authenticate"].startswith(
        'Bearer realm="gatehouse", error="invalid_token"'
    )
    # The genuine token still works: the forgery was refused for its signature alone.
    genuine = await web.get("/authors?id=1", headers=await tokens.headers("admin"))
    assert genuine.status_code == 200


async def test_the_request_id_is_echoed_and_recorded_in_the_audit_event(
    web: httpx.AsyncClient, tokens: Tokens, author: dict[str, object]
) -> None:
    request_id = f"e2e-{uuid.uuid4()}"
    path = f"/authors/{author['id']}"
    response = await web.get(
        path, headers={**await tokens.headers("viewer"), "X-Request-ID": request_id}
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id

    async def recorded() -> dict[str, object] | None:
        listed = await web.get(
            "/audit-logs",
            params={"resource": path, "username": "viewer", "per_page": 50},
            headers=await tokens.headers("auditor"),
        )
        assert listed.status_code == 200, listed.text
        found = [e for e in listed.json()["items"] if e["request_id"] == request_id]
        return found[0] if found else None

    event = await poll(recorded, AUDIT_WITHIN_SECONDS, f"audit event of request {request_id}")
    assert event["action_type"] == "GET /authors/{id}"
    assert event["outcome"] == "success"
    assert event["response_status"] == 200


async def test_a_fresh_request_id_is_given_when_the_client_sends_none(
    web: httpx.AsyncClient,
) -> None:
    first, second = (await web.get("/health/live"), await web.get("/health/live"))
    assert uuid.UUID(first.headers["X-Request-ID"]) != uuid.UUID(second.headers["X-Request-ID"])


# Responses of every kind the gateway gives, by their expected status.
RESPONSES = {
    "read": 200,
    "create": 201,
    "delete": 204,
    "validation": 400,
    "no token": 401,
    "no role": 403,
    "missing": 404,
    "too large": 413,
    "method not allowed": 405,
    "options": 204,
    "preflight": 200,
    "health": 200,
    "openapi": 200,
    "docs": 200,
    "docs asset": 200,
}


async def respond(
    kind: str, web: httpx.AsyncClient, tokens: Tokens, author: dict[str, object]
) -> httpx.Response:
    """One request that draws a response of `kind`."""
    editor, viewer = await tokens.headers("editor"), await tokens.headers("viewer")
    match kind:
        case "read":
            return await web.get(f"/authors/{author['id']}", headers=viewer)
        case "create":
            created = await web.post(
                "/authors", json={"name": f"e2e-{uuid.uuid4()}"}, headers=editor
            )
            await web.delete(created.headers["Location"], headers=editor)
            return created
        case "delete":
            return await web.delete(f"/authors/{author['id']}", headers=editor)
        case "validation":
            return await web.get("/authors/not-a-number", headers=viewer)
        case "no token":
            return await web.get("/authors")
        case "no role":
            return await web.get("/authors", headers=await tokens.headers("nobody"))
        case "missing":
            return await web.get("/authors/999999999", headers=viewer)
        case "too large":
            # Over the gateway's 1 MiB, under Traefik's 2 MiB buffer: the gateway answers.
            return await web.post("/authors", json={"name": "x" * 1536 * 1024}, headers=editor)
        case "health":
            return await web.get("/health")
        case "method not allowed":
            return await web.patch("/authors", headers=editor)
        case "options":
            return await web.options(f"/authors/{author['id']}")
        case "preflight":
            return await web.options(
                "/authors",
                headers={"Origin": DEV_ORIGIN, "Access-Control-Request-Method": "POST"},
            )
        case "openapi":
            return await web.get("/openapi.json")
        case "docs asset":
            return await web.get("/docs/static/swagger-ui.css")
        case _:
            return await web.get("/docs")


@pytest.mark.parametrize("kind", RESPONSES)
async def test_every_response_carries_the_security_headers(
    web: httpx.AsyncClient, tokens: Tokens, author: dict[str, object], kind: str
) -> None:
    response = await respond(kind, web, tokens, author)
    assert response.status_code == RESPONSES[kind], response.text
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get_list(name) == [value], name
    [policy] = response.headers.get_list("Content-Security-Policy")
    assert policy.startswith("default-src 'none'; ")
    assert "frame-ancestors 'none'" in policy
    if kind == "docs":
        # Swagger UI's assets from this origin, and its one inline script by its digest.
        assert re.search(r"script-src 'self' 'sha256-[A-Za-z0-9+/=]+';", policy)
        assert "unsafe-inline" not in policy
        assert "http" not in policy
    else:
        assert policy == "default-src 'none'; frame-ancestors 'none'"
    assert response.headers["X-Request-ID"]


# Upgrades of /web: accepted, and refused for their format or their origin.
UPGRADES = {
    "accepted": ("", {}, 101),
    "bad format": ("?format=xml", {}, 400),
    "foreign origin": ("", {"Origin": "https://evil.example"}, 403),
}


@pytest.mark.parametrize("kind", UPGRADES)
async def test_every_websocket_upgrade_answer_carries_the_security_headers(
    stack: Stack, tokens: Tokens, kind: str
) -> None:
    query, extra, status = UPGRADES[kind]
    headers = {**await tokens.headers("viewer"), **extra}
    try:
        async with websockets.connect(
            stack.web_url.replace("http", "ws", 1) + "/web" + query, additional_headers=headers
        ) as socket:
            assert socket.response is not None
            response = socket.response
    except websockets.InvalidStatus as refused:
        response = refused.response
    assert response.status_code == status
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get_all(name) == [value], name
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Request-ID"]
