"""The HTTP API end to end in-process: real services over gRPC, tokens of CONTRACT's users."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.gateway.tests.tokens import Realm

ROUTES = [
    # (method, path template, body, role needed)
    ("GET", "/authors", None, "get-authors"),
    ("GET", "/authors/paginated", None, "get-authors"),
    ("POST", "/authors", "new", "create-author"),
    ("GET", "/authors/{id}", None, "get-authors"),
    ("PUT", "/authors/{id}", "renamed", "update-author"),
    ("DELETE", "/authors/{id}", None, "delete-author"),
    ("GET", "/audit-logs", None, "view-audit-logs"),
    ("GET", "/audit-logs/user/sub-viewer", None, "view-audit-logs"),
]
USERS_WITH = {
    "get-authors": {"admin", "editor", "viewer"},
    "create-author": {"admin", "editor"},
    "update-author": {"admin", "editor"},
    "delete-author": {"admin", "editor"},
    "view-audit-logs": {"admin", "auditor"},
}
USERS = ["admin", "editor", "viewer", "auditor", "nobody"]


def bearer(realm: Realm, username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {realm.token(username)}"}


async def create(
    gateway: httpx.AsyncClient, realm: Realm, name: str | None = None
) -> dict[str, object]:
    response = await gateway.post(
        "/authors",
        json={"name": name or f"author {uuid.uuid4().hex}"},
        headers=bearer(realm, "editor"),
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


@pytest.fixture
async def author(gateway: httpx.AsyncClient, realm: Realm) -> dict[str, object]:
    return await create(gateway, realm)


@pytest.mark.parametrize("username", USERS)
@pytest.mark.parametrize(("method", "path", "body", "role"), ROUTES)
async def test_every_route_allows_exactly_the_users_holding_its_role(
    gateway: httpx.AsyncClient,
    realm: Realm,
    author: dict[str, object],
    username: str,
    method: str,
    path: str,
    body: str | None,
    role: str,
) -> None:
    url = path.replace("{id}", str(author["id"]))
    json = {"name": f"{body} {uuid.uuid4().hex}"} if body else None
    response = await gateway.request(method, url, json=json, headers=bearer(realm, username))
    if username in USERS_WITH[role]:
        assert response.status_code < 300, response.text
    else:
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"


async def test_audit_log_by_id_is_404_when_missing_for_auditors(
    gateway: httpx.AsyncClient, realm: Realm
) -> None:
    response = await gateway.get("/audit-logs/999999999", headers=bearer(realm, "auditor"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    refused = await gateway.get("/audit-logs/1", headers=bearer(realm, "viewer"))
    assert refused.status_code == 403


BARE_CHALLENGE = 'Bearer realm="gatehouse"'


@pytest.mark.parametrize(
    ("headers", "msg", "challenge"),
    [
        # No credentials, or none of the Bearer scheme: the bare challenge (RFC 6750 3.1).
        ({}, "missing bearer token", BARE_CHALLENGE),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing bearer token", BARE_CHALLENGE),
        ({"Authorization": "Bearer "}, "missing bearer token", BARE_CHALLENGE),
        # A token sent and refused: invalid_token, and why.
        (
            {"Authorization": "Bearer nonsense"},
            "malformed token",
            f'{BARE_CHALLENGE}, error="invalid_token", error_description="malformed token"',
        ),
    ],
)
async def test_missing_or_bad_tokens_get_401_json_with_a_bearer_challenge(
    gateway: httpx.AsyncClient, headers: dict[str, str], msg: str, challenge: str
) -> None:
    response = await gateway.get("/authors", headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": "authentication_failed", "msg": msg, "details": None}
    }
    assert response.headers.get_list("www-authenticate") == [challenge]


async def test_an_expired_token_is_an_invalid_token(
    gateway: httpx.AsyncClient, realm: Realm
) -> None:
    expired = realm.token("viewer", lifetime=-60)
    response = await gateway.get("/authors", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'{BARE_CHALLENGE}, error="invalid_token", error_description="token expired"'
    )


@pytest.mark.parametrize(
    "overrides",
    [{"lifetime": -120}, {"iss": "http://evil.example/realms/gatehouse"}, {"azp": "other"}],
    ids=["expired", "wrong-issuer", "wrong-client"],
)
async def test_tokens_that_fail_a_claim_check_get_401(
    gateway: httpx.AsyncClient, realm: Realm, overrides: dict[str, Any]
) -> None:
    token = realm.token("admin", **overrides)
    response = await gateway.get("/authors", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert token not in response.text


async def test_create_get_update_delete_with_location_etag_and_if_match(
    gateway: httpx.AsyncClient, realm: Realm
) -> None:
    editor = bearer(realm, "editor")
    name = f"Ursula {uuid.uuid4().hex}"
    created = await gateway.post("/authors", json={"name": f"  {name}  "}, headers=editor)
    assert created.status_code == 201
    author = created.json()
    assert author["name"] == name
    assert set(author) == {"id", "name", "created_at", "updated_at"}
    assert created.headers["location"] == f"/authors/{author['id']}"

    fetched = await gateway.get(created.headers["location"], headers=editor)
    assert fetched.json() == author
    etag = fetched.headers["etag"]

    renamed = await gateway.put(
        f"/authors/{author['id']}",
        json={"name": f"{name} II"},
        headers={**editor, "If-Match": etag},
    )
    assert renamed.status_code == 200
    assert renamed.headers["etag"] != etag
    stale = await gateway.put(
        f"/authors/{author['id']}",
        json={"name": f"{name} III"},
        headers={**editor, "If-Match": etag},
    )
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "precondition_failed"

    duplicate = await gateway.post("/authors", json={"name": f"{name} II"}, headers=editor)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "conflict"

    deleted = await gateway.delete(f"/authors/{author['id']}", headers=editor)
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = await gateway.get(f"/authors/{author['id']}", headers=editor)
    assert gone.status_code == 404
    again = await gateway.delete(f"/authors/{author['id']}", headers=editor)
    assert again.status_code == 404


async def test_a_conditional_get_of_the_current_version_is_304_without_a_body(
    gateway: httpx.AsyncClient, realm: Realm, author: dict[str, object]
) -> None:
    viewer = bearer(realm, "viewer")
    fetched = await gateway.get(f"/authors/{author['id']}", headers=viewer)
    assert fetched.status_code == 200
    etag = fetched.headers["etag"]
    assert fetched.headers["cache-control"] == "private, no-cache"
    for header in (etag, f"W/{etag}", f'"0", {etag}', "*"):
        unchanged = await gateway.get(
            f"/authors/{author['id']}", headers={**viewer, "If-None-Match": header}
        )
        assert unchanged.status_code == 304, header
        assert unchanged.content == b""
        assert unchanged.headers["etag"] == etag
    renamed = await gateway.put(
        f"/authors/{author['id']}",
        json={"name": f"renamed {uuid.uuid4().hex}"},
        headers=bearer(realm, "editor"),
    )
    assert renamed.status_code == 200
    # The write went through this gateway: its next read sees it at once.
    changed = await gateway.get(
        f"/authors/{author['id']}", headers={**viewer, "If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert changed.json() == renamed.json()
    assert changed.headers["etag"] == renamed.headers["etag"] != etag


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"name": ""}', "validation_error"),
        (b'{"name": "   "}', "validation_error"),
        (b'{"name": "' + b"x" * 256 + b'"}', "validation_error"),
        (b'{"nom": "x"}', "validation_error"),
        (b"{not json", "invalid_data"),
    ],
)
async def test_invalid_bodies_get_400_with_the_contract_codes(
    gateway: httpx.AsyncClient, realm: Realm, body: bytes, code: str
) -> None:
    response = await gateway.post(
        "/authors",
        content=body,
        headers={**bearer(realm, "editor"), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


async def test_invalid_query_parameters_get_400_validation_error(
    gateway: httpx.AsyncClient, realm: Realm
) -> None:
    response = await gateway.get(
        "/authors/paginated", params={"per_page": 1001}, headers=bearer(realm, "viewer")
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == "per_page"


@pytest.mark.parametrize(
    "path",
    [
        "/audit-logs/user/a%00b",
        "/audit-logs?user_id=%00",
        "/audit-logs?username=%00",
        "/audit-logs?action_type=a%00b",
        "/audit-logs?resource=%1b",
        "/audit-logs/user/sub-viewer?action_type=%7f",
    ],
)
async def test_audit_text_filters_with_control_characters_get_400(
    gateway: httpx.AsyncClient, realm: Realm, path: str
) -> None:
    response = await gateway.get(path, headers=bearer(realm, "auditor"))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_error"


@pytest.mark.parametrize(
    "template",
    [
        "plain {u}",
        "  padded {u}  ",
        "ünïcode {u} 名前",
        "tab\tinside {u}",
        "newline\n{u}",
        "nul {u}\x00",
        "delete {u}\x7f",
        "c1 \x85 control {u}",
        " ",
        "\u00a0",
    ],
)
async def test_an_author_name_is_accepted_exactly_when_the_documented_schema_allows_it(
    gateway: httpx.AsyncClient, realm: Realm, template: str
) -> None:
    document = (await gateway.get("/openapi.json")).json()
    schema = document["components"]["schemas"]["AuthorIn"]["properties"]["name"]
    name = template.format(u=uuid.uuid4().hex)
    documented_valid = (
        schema["minLength"] <= len(name) <= schema["maxLength"]
        and re.search(schema["pattern"], name) is not None
    )
    response = await gateway.post("/authors", json={"name": name}, headers=bearer(realm, "editor"))
    assert response.status_code == (201 if documented_valid else 400), response.text


@pytest.mark.parametrize(
    "value", ["0", "1700000000", "1700000000.5", "yesterday", "2026-13-01", "2026-11-27T25:00"]
)
@pytest.mark.parametrize("param", ["start_date", "end_date"])
async def test_audit_date_filters_take_only_iso_8601(
    gateway: httpx.AsyncClient, realm: Realm, param: str, value: str
) -> None:
    response = await gateway.get(
        "/audit-logs", params={param: value}, headers=bearer(realm, "auditor")
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [param]


@pytest.mark.parametrize(
    "value",
    ["2026-11-27", "2026-11-27T01:02:03", "2026-11-27T01:02:03.5+02:00", "2026-11-27T01:02Z"],
)
async def test_audit_date_filters_accept_iso_8601_dates_and_times(
    gateway: httpx.AsyncClient, realm: Realm, value: str
) -> None:
    for path in ("/audit-logs", "/audit-logs/user/sub-viewer"):
        response = await gateway.get(
            path, params={"start_date": value, "end_date": value}, headers=bearer(realm, "auditor")
        )
        assert response.status_code == 200, response.text


async def test_pagination_by_page_and_by_cursor(gateway: httpx.AsyncClient, realm: Realm) -> None:
    tag = uuid.uuid4().hex
    for i in range(5):
        await create(gateway, realm, f"paged {tag} {i}")
    viewer = bearer(realm, "viewer")
    page = await gateway.get(
        "/authors/paginated", params={"search": tag, "page": 2, "per_page": 2}, headers=viewer
    )
    meta = page.json()["meta"]
    assert [a["name"] for a in page.json()["items"]] == [f"paged {tag} 2", f"paged {tag} 3"]
    assert (meta["page"], meta["per_page"], meta["total"], meta["pages"], meta["has_more"]) == (
        2,
        2,
        5,
        3,
        True,
    )
    names: list[str] = []
    cursor = ""
    while True:
        response = await gateway.get(
            "/authors/paginated",
            params={"search": tag, "per_page": 2, "cursor": cursor},
            headers=viewer,
        )
        body = response.json()
        names += [a["name"] for a in body["items"]]
        if not body["meta"]["has_more"]:
            assert body["meta"]["next_cursor"] is None
            break
        cursor = body["meta"]["next_cursor"]
    assert names == [f"paged {tag} {i}" for i in range(5)]


async def test_every_response_has_request_id_security_and_rate_limit_headers(
    gateway: httpx.AsyncClient, realm: Realm
) -> None:
    response = await gateway.get(
        "/authors", headers={**bearer(realm, "viewer"), "X-Request-ID": "client-id-1"}
    )
    assert response.headers["x-request-id"] == "client-id-1"
    for header in (
        "strict-transport-security",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "content-security-policy",
    ):
        assert header in response.headers
    assert int(response.headers["x-ratelimit-limit"]) == 100000
    remaining = int(response.headers["x-ratelimit-remaining"])
    assert 0 < remaining < 100000
    # A minute's window, and a granted hit counts from the end of its one-second lease.
    reset = int(response.headers["x-ratelimit-reset"])
    assert 0 < reset <= 61
    # The draft's fields name both rules of conftest.RULES, the tightest first; the
    # legacy headers are the first one's.
    assert response.headers.get_list("ratelimit-policy") == [
        '"http_per_user";q=100000;w=60, "http_per_ip";q=200000;w=60'
    ]
    user, ip = response.headers["ratelimit"].split(", ")
    assert user == f'"http_per_user";r={remaining};t={reset}'
    assert re.fullmatch(r'"http_per_ip";r=\d+;t=\d+', ip)
    insane = await gateway.get("/health/live", headers={"X-Request-ID": "bad id\twith tab"})
    assert insane.headers["x-request-id"] != "bad id\twith tab"
    assert len(insane.headers["x-request-id"]) == 36
    missing = await gateway.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert "x-request-id" in missing.headers


async def test_bodies_over_the_limit_get_413_even_without_or_with_a_lying_length(
    gateway: httpx.AsyncClient, realm: Realm
) -> None:
    editor = {**bearer(realm, "editor"), "Content-Type": "application/json"}
    big = b'{"name": "' + b"x" * (1024 * 1024) + b'"}'
    declared = await gateway.post("/authors", content=big, headers=editor)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    chunked = await gateway.post("/authors", content=chunks(), headers=editor)
    assert chunked.status_code == 413
    assert chunked.json()["error"]["code"] == "payload_too_large"


async def test_openapi_documents_every_route_with_400_not_422(gateway: httpx.AsyncClient) -> None:
    schema = (await gateway.get("/openapi.json")).json()
    assert set(schema["paths"]) == {
        "/authors",
        "/authors/paginated",
        "/authors/{id}",
        "/audit-logs",
        "/audit-logs/{id}",
        "/audit-logs/user/{user_id}",
        "/health",
        "/health/live",
        "/health/ready",
    }
    put = schema["paths"]["/authors/{id}"]["put"]
    assert {"400", "401", "403", "404", "409", "412", "413", "429", "503", "504"} <= set(
        put["responses"]
    )
    assert "422" not in str(schema)


async def test_health_reports_every_dependency(gateway: httpx.AsyncClient) -> None:
    health = await gateway.get("/health")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "services": {"authors": "ok", "audit": "ok", "ratelimit": "ok", "redis": "ok"},
    }
    assert (await gateway.get("/health/ready")).status_code == 200
    assert (await gateway.get("/health/live")).json() == {"status": "ok"}
