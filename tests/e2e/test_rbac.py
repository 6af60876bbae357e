"""Every route for every development user, with real Keycloak tokens, through Traefik.

The gateway's own tests cover the details of each answer; this table proves the real
path: tokens issued by Keycloak, Traefik's routers and middlewares, the real services.
"""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import USERS, Tokens
from tests.sre.prometheus import poll

ADMIN, EDITOR, VIEWER, AUDITOR = "admin", "editor", "viewer", "auditor"
# route -> (method, path template, required role, users holding it, success status)
ROUTES: dict[str, tuple[str, str, str, frozenset[str], int]] = {
    "list authors": ("GET", "/authors", "get-authors", frozenset({ADMIN, EDITOR, VIEWER}), 200),
    "page authors": (
        "GET",
        "/authors/paginated?per_page=5",
        "get-authors",
        frozenset({ADMIN, EDITOR, VIEWER}),
        200,
    ),
    "create author": ("POST", "/authors", "create-author", frozenset({ADMIN, EDITOR}), 201),
    "get author": (
        "GET",
        "/authors/{author}",
        "get-authors",
        frozenset({ADMIN, EDITOR, VIEWER}),
        200,
    ),
    "update author": ("PUT", "/authors/{author}", "update-author", frozenset({ADMIN, EDITOR}), 200),
    "delete author": (
        "DELETE",
        "/authors/{author}",
        "delete-author",
        frozenset({ADMIN, EDITOR}),
        204,
    ),
    "list audit": (
        "GET",
        "/audit-logs?per_page=5",
        "view-audit-logs",
        frozenset({ADMIN, AUDITOR}),
        200,
    ),
    "get audit": (
        "GET",
        "/audit-logs/{event}",
        "view-audit-logs",
        frozenset({ADMIN, AUDITOR}),
        200,
    ),
    "audit of a user": (
        "GET",
        "/audit-logs/user/{user}?per_page=5",
        "view-audit-logs",
        frozenset({ADMIN, AUDITOR}),
        200,
    ),
}
# Audit events are written in batches, a moment after the request.
AUDIT_WITHIN_SECONDS = 20.0
PUBLIC = ("/health", "/health/live", "/health/ready", "/openapi.json", "/docs")
CASES = [(route, user) for route in ROUTES for user in (*USERS, None)]


async def an_audit_event(web: httpx.AsyncClient, tokens: Tokens) -> dict[str, str]:
    """admin's newest audit event (the test's author creation at least, once written)."""

    async def newest() -> dict[str, str] | None:
        listed = await web.get(
            "/audit-logs",
            params={"username": ADMIN, "per_page": 1},
            headers=await tokens.headers(ADMIN),
        )
        assert listed.status_code == 200, listed.text
        items: list[dict[str, str]] = listed.json()["items"]
        return items[0] if items else None

    return await poll(newest, AUDIT_WITHIN_SECONDS, "an audit event of admin")


@pytest.mark.parametrize(
    ("route", "user"), CASES, ids=[f"{r}-{u or 'anonymous'}" for r, u in CASES]
)
async def test_route_answers_by_role(
    web: httpx.AsyncClient,
    tokens: Tokens,
    author: dict[str, object],
    route: str,
    user: str | None,
) -> None:
    method, template, role, holders, success = ROUTES[route]
    event = await an_audit_event(web, tokens) if "{" in template and "audit" in template else {}
    path = template.format(author=author["id"], event=event.get("id"), user=event.get("user_id"))
    body = {"name": f"{author['name']}-{user}"} if method in ("POST", "PUT") else None
    headers = await tokens.headers(user) if user else {}
    response = await web.request(method, path, json=body, headers=headers)

    if user is None:
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "authentication_failed"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    elif user in holders:
        assert response.status_code == success, response.text
    else:
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["code"] == "permission_denied"
        assert error["details"] == {"required_role": role}
    if method == "POST" and response.status_code == 201:
        await web.delete(response.headers["Location"], headers=await tokens.headers(ADMIN))


@pytest.mark.parametrize("path", PUBLIC)
@pytest.mark.parametrize("user", [*USERS, None])
async def test_public_routes_answer_everyone(
    web: httpx.AsyncClient, tokens: Tokens, path: str, user: str | None
) -> None:
    headers = await tokens.headers(user) if user else {}
    response = await web.get(path, headers=headers)
    assert response.status_code == 200, response.text
