"""Request bodies in-process: checked in the order of docs/api.md (Request bodies), and
never read beyond the gateway's bounds (depth, size, UTF-8)."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from gatehouse_gateway.app import create_app
from gatehouse_gateway.client_json import MAX_DEPTH
from gatehouse_gateway.settings import Settings
from services.gateway.tests.tokens import Realm

LIMIT = Settings().max_body_bytes
MALFORMED = b"{not json"
DEEP_ARRAYS = b'{"name": ' + b"[" * 1000 + b"]" * 1000 + b"}"
DEEP_OBJECTS = b'{"name": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}"
OVERSIZED = b'{"name": "' + b"x" * LIMIT + b'"}'
JSON = {"Content-Type": "application/json"}
NESTED_TOO_DEEP = f"request body is nested deeper than {MAX_DEPTH} levels"


def _api_routes() -> list[APIRoute]:
    app = create_app(Settings())
    contexts = iter_route_contexts(app.routes)
    return [c.original_route for c in contexts if isinstance(c.original_route, APIRoute)]


def body_routes() -> list[tuple[str, str]]:
    """(method, path with its parameters filled in) of every route that takes a body."""
    return [
        (method, re.sub(r"\{[^}]+\}", "1", route.path))
        for route in _api_routes()
        for method in sorted((route.methods or set()) & {"POST", "PUT", "PATCH"})
    ]


BODY_ROUTES = body_routes()


def bearer(realm: Realm, username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {realm.token(username)}"}


def test_there_are_routes_with_bodies_and_fastapi_parses_none_of_them() -> None:
    # FastAPI reads and parses a body parameter before any dependency runs, so before
    # authentication: every body is a JsonBody dependency instead.
    assert ("POST", "/authors") in BODY_ROUTES
    assert ("PUT", "/authors/1") in BODY_ROUTES
    assert [route.path for route in _api_routes() if route.body_field is not None] == []


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(
    "body",
    [MALFORMED, DEEP_ARRAYS, DEEP_OBJECTS, OVERSIZED],
    ids=["malformed", "deep-arrays", "deep-objects", "oversized"],
)
@pytest.mark.parametrize(
    "credentials",
    [{}, {"Authorization": "Bearer nonsense"}],
    ids=["no-token", "bad-token"],
)
async def test_an_unauthenticated_body_gets_401_and_is_never_read(
    gateway: httpx.AsyncClient,
    method: str,
    path: str,
    body: bytes,
    credentials: dict[str, str],
) -> None:
    response = await gateway.request(method, path, content=body, headers={**JSON, **credentials})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "authentication_failed"


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("body", [MALFORMED, DEEP_ARRAYS, OVERSIZED])
async def test_a_caller_without_the_role_gets_403_before_the_body_is_read(
    gateway: httpx.AsyncClient, realm: Realm, method: str, path: str, body: bytes
) -> None:
    headers = {**JSON, **bearer(realm, "nobody")}
    response = await gateway.request(method, path, content=body, headers=headers)
    assert response.status_code == 403, response.text


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_then_size_then_json_then_schema(
    gateway: httpx.AsyncClient, realm: Realm, method: str, path: str
) -> None:
    headers = {**JSON, **bearer(realm, "admin")}
    oversized_and_malformed = b"{" * (LIMIT + 1)
    too_large = await gateway.request(
        method, path, content=oversized_and_malformed, headers=headers
    )
    assert too_large.status_code == 413
    assert too_large.json()["error"] == {
        "code": "payload_too_large",
        "msg": f"request body exceeds {LIMIT} bytes",
        "details": {"max_bytes": LIMIT},
    }
    malformed = await gateway.request(method, path, content=MALFORMED, headers=headers)
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "invalid_data"
    invalid = await gateway.request(method, path, content=b'{"nom": "x"}', headers=headers)
    assert invalid.status_code == 400
    assert invalid.json()["error"]["code"] == "validation_error"


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        (DEEP_ARRAYS, NESTED_TOO_DEEP),
        (DEEP_OBJECTS, NESTED_TOO_DEEP),
        (b"[" * 100_000, "request body is not valid JSON"),
        (b'{"name": "\\ud800"}', "request body holds a lone UTF-16 surrogate"),
        (b'{"name": "caf\xe9"}', "request body is not UTF-8"),
        (b'{"name": NaN}', "request body holds NaN, which is not JSON"),
        (b'{"name": 1e999}', "request body holds a number out of range"),
    ],
    ids=["deep-arrays", "deep-objects", "unclosed", "lone-surrogate", "latin-1", "nan", "inf"],
)
async def test_a_body_beyond_bounds_gets_400_invalid_data_and_the_next_request_is_served(
    gateway: httpx.AsyncClient, realm: Realm, body: bytes, msg: str
) -> None:
    editor = bearer(realm, "editor")
    # In-process, an exception escaping the app would fail the request here.
    response = await gateway.post("/authors", content=body, headers={**JSON, **editor})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {"code": "invalid_data", "msg": msg, "details": None}
    listed = await gateway.get("/authors", params={"name": "no such author"}, headers=editor)
    assert listed.status_code == 200


async def test_a_body_nested_to_the_limit_is_read(gateway: httpx.AsyncClient, realm: Realm) -> None:
    # Within the limit, the schema (not the parser) refuses a name that is no string.
    name = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    response = await gateway.post(
        "/authors", content=f'{{"name": {name}}}', headers={**JSON, **bearer(realm, "editor")}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["details"][0]["field"] == "name"


@pytest.mark.parametrize(
    ("content", "content_type", "code", "field"),
    [
        (b"", "application/json", "validation_error", "body"),
        (b'{"name": "x"}', "text/plain", "invalid_data", None),
        (b'{"name": "x"}', None, "invalid_data", None),
    ],
    ids=["empty", "text-plain", "no-content-type"],
)
async def test_a_body_must_be_there_and_declared_json(
    gateway: httpx.AsyncClient,
    realm: Realm,
    content: bytes,
    content_type: str | None,
    code: str,
    field: str | None,
) -> None:
    headers = bearer(realm, "editor")
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await gateway.post("/authors", content=content, headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert [d["field"] for d in error["details"]] == [field]


async def test_a_vendor_json_media_type_is_json(gateway: httpx.AsyncClient, realm: Realm) -> None:
    headers = {**bearer(realm, "editor"), "Content-Type": "application/vnd.api+json"}
    name = f"vendor {uuid.uuid4().hex}"
    response = await gateway.post("/authors", content=f'{{"name": "{name}"}}', headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name
