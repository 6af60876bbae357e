"""GET /authors/{id}'s fast path answers exactly as the route does.

Two gateways on the same services: the app as built, and the same app without the
`AuthorReads` middleware, so that every GET goes through FastAPI's routing and
dependencies. Every kind of request gets the same status, headers and body from both,
and the same metric label and audit event.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from fastapi.security import HTTPBearer
from starlette.requests import Request

from gatehouse_gateway.app import create_app
from gatehouse_gateway.auth import TokenVerifier
from gatehouse_gateway.context import GatewayContext
from gatehouse_gateway.http import author_reads
from gatehouse_gateway.http.author_reads import AuthorReads
from gatehouse_gateway.http.dependencies import bearer_token
from gatehouse_gateway.http.edge import HTTP_REQUESTS
from gatehouse_gateway.schemas import MAX_ID
from gatehouse_gateway.settings import Settings
from services.gateway.tests.conftest import Upstreams, gateway_settings
from services.gateway.tests.tokens import Realm
from tests.harness.backends import Backend

# An origin the development profile allows (settings.DEVELOPMENT_CORS_ORIGINS).
DEV_ORIGIN = "http://127.0.0.1:5173"
# Headers that differ between any two answers, whoever gives them.
_PER_ANSWER = {"x-request-id", "date", "content-length"}


@asynccontextmanager
async def _gateway(
    settings: Settings, realm: Realm, *, fast: bool
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    context = GatewayContext.build(settings)
    context.verifier = TokenVerifier(settings, httpx.AsyncClient(transport=realm.transport()))
    app = create_app(settings, context)
    if not fast:
        app.user_middleware = [
            m for m in app.user_middleware if getattr(m.cls, "__name__", "") != AuthorReads.__name__
        ]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield app, client


@pytest.fixture(scope="module")
async def both(
    upstreams: Upstreams, redis_server: Backend, realm: Realm
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    settings = gateway_settings(upstreams, redis_server.url)
    async with (
        _gateway(settings, realm, fast=True) as (_, fast),
        _gateway(settings, realm, fast=False) as (_, routed),
    ):
        yield fast, routed


@pytest.fixture(scope="module")
async def author(both: tuple[httpx.AsyncClient, httpx.AsyncClient], realm: Realm) -> dict[str, Any]:
    fast, _ = both
    created = await fast.post(
        "/authors",
        json={"name": f"fast path {uuid.uuid4().hex}"},
        headers={"Authorization": f"Bearer {realm.token('editor')}"},
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def _answer(response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in response.headers.items() if k not in _PER_ANSWER}
    # The remaining counts move by the other gateway's request in between.
    headers.pop("x-ratelimit-remaining", None)
    if "ratelimit" in headers:
        headers["ratelimit"] = re.sub(r";r=\d+;", ";r=?;", headers["ratelimit"])
    return response.status_code, headers, response.content


def _cases(realm: Realm, author_id: int) -> list[tuple[str, dict[str, str]]]:
    viewer = {"Authorization": f"Bearer {realm.token('viewer')}"}
    return [
        (f"/authors/{author_id}", {}),
        (f"/authors/{author_id}", {"Authorization": f"Basic {realm.token('viewer')}"}),
        (f"/authors/{author_id}", {"Authorization": "Bearer "}),
        (f"/authors/{author_id}", {"Authorization": "Bearer not-a-token"}),
        (
            f"/authors/{author_id}",
            {"Authorization": f"Bearer {realm.token('viewer', lifetime=-60)}"},
        ),
        (f"/authors/{author_id}", {"Authorization": f"Bearer {realm.token('nobody')}"}),
        (f"/authors/{author_id}", {"Authorization": f"Bearer {realm.token('auditor')}"}),
        (f"/authors/{author_id}", viewer),
        (f"/authors/{author_id}", {"Authorization": f"bearer  {realm.token('viewer')}"}),
        (f"/authors/{author_id}?unknown=1", viewer),
        (f"/authors/{author_id}", {**viewer, "If-None-Match": '"1"'}),
        (f"/authors/{author_id}", {**viewer, "If-None-Match": 'W/"1", "7"'}),
        (f"/authors/{author_id}", {**viewer, "If-None-Match": '"999"'}),
        (f"/authors/{author_id}", {**viewer, "If-None-Match": "*"}),
        (f"/authors/{MAX_ID}", viewer),
        (f"/authors/{MAX_ID + 1}", viewer),
        ("/authors/0", viewer),
        (f"/authors/0{author_id}", viewer),
        ("/authors/-1", viewer),
        ("/authors/abc", viewer),
        (f"/authors/{author_id}/", viewer),
        (f"/authors/{author_id}", {**viewer, "Origin": DEV_ORIGIN}),
        (f"/authors/{author_id}", {"Origin": DEV_ORIGIN}),
        (f"/authors/{author_id}", {**viewer, "Origin": "https://elsewhere.example"}),
    ]


async def test_every_kind_of_get_is_answered_alike_by_both_paths(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], realm: Realm, author: dict[str, Any]
) -> None:
    fast, routed = both
    for path, headers in _cases(realm, author["id"]):
        one = await fast.get(path, headers=headers)
        other = await routed.get(path, headers=headers)
        assert _answer(one) == _answer(other), (path, headers, one.text, other.text)


async def test_the_fast_path_answers_with_every_header_of_the_contract(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], realm: Realm, author: dict[str, Any]
) -> None:
    fast, _ = both
    viewer = {"Authorization": f"Bearer {realm.token('viewer')}", "Origin": DEV_ORIGIN}
    response = await fast.get(f"/authors/{author['id']}", headers=viewer)
    assert response.status_code == 200
    assert response.headers["ratelimit-policy"].startswith('"http_per_user";q=100000;w=60')
    assert response.headers["ratelimit"].startswith('"http_per_user";r=')
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
        assert name in response.headers
    assert response.headers["access-control-allow-origin"] == DEV_ORIGIN
    assert response.headers["x-frame-options"] == "DENY"
    anonymous = await fast.get(f"/authors/{author['id']}")
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="gatehouse"'


async def test_the_fast_path_takes_the_well_formed_ids_only(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
    realm: Realm,
    author: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken: list[str] = []
    original = author_reads.AuthorReads._get

    async def spy(self: AuthorReads, scope: Any, receive: Any, send: Any, author_id: str) -> None:
        taken.append(scope["path"])
        await original(self, scope, receive, send, author_id)

    monkeypatch.setattr(author_reads.AuthorReads, "_get", spy)
    fast, _ = both
    viewer = {"Authorization": f"Bearer {realm.token('viewer')}"}
    paths = [f"/authors/{author['id']}", f"/authors/{MAX_ID}", f"/authors/{MAX_ID + 1}"]
    paths += ["/authors/0", f"/authors/0{author['id']}", "/authors/paginated", "/authors"]
    for path in paths:
        await fast.get(path, headers=viewer)
    await fast.head(f"/authors/{author['id']}", headers=viewer)
    assert taken == [f"/authors/{author['id']}", f"/authors/{MAX_ID}"]


async def test_metrics_and_audit_events_are_the_routes(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
    realm: Realm,
    author: dict[str, Any],
    upstreams: Upstreams,
) -> None:
    fast, routed = both
    label = ("GET", "/authors/{id}", "200")
    before = HTTP_REQUESTS.labels(*label)._value.get()
    viewer = {"Authorization": f"Bearer {realm.token('viewer')}"}
    ids = []
    for client in (fast, routed):
        response = await client.get(f"/authors/{author['id']}?x=1", headers=viewer)
        assert response.status_code == 200
        ids.append(response.headers["x-request-id"])
    assert HTTP_REQUESTS.labels(*label)._value.get() == before + 2
    connection = await asyncpg.connect(upstreams.audit.settings.database_url)
    try:
        rows: list[asyncpg.Record] = []
        for _ in range(100):
            rows = await connection.fetch(
                "SELECT request_id, user_id, username, user_roles, action_type, resource,"
                " outcome, ip_address, user_agent, request_data, response_status,"
                " error_message FROM audit_events"
                " WHERE request_id = ANY($1::text[]) ORDER BY request_id",
                ids,
            )
            if len(rows) == 2:
                break
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    assert len(rows) == 2
    one, other = ({k: v for k, v in dict(r).items() if k != "request_id"} for r in rows)
    assert one == other
    assert one["action_type"] == "GET /authors/{id}"
    assert one["response_status"] == 200


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Bearer  x", "bearer x", "BEARER x", "Basic x", "Bearerx y"],
)
async def test_the_bearer_token_is_read_as_fastapis_http_bearer_reads_it(
    header: str | None,
) -> None:
    raw = [] if header is None else [(b"authorization", header.encode())]
    request = Request({"type": "http", "headers": raw, "method": "GET", "path": "/"})
    credentials = await HTTPBearer(auto_error=False)(request)
    assert bearer_token(header) == (credentials.credentials if credentials else None)
