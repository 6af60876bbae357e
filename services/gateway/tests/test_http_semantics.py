"""What HTTP clients and browsers expect of the gateway, on the app alone (no upstream is
called: none of these answers needs one): the real `Allow` on 405 and OPTIONS, CORS by
profile and settings, and the docs page and the console with their assets served here."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gatehouse_gateway.app import create_app
from gatehouse_gateway.http import console, docs
from gatehouse_gateway.http.cors import EXPOSED_HEADERS
from gatehouse_gateway.settings import DEVELOPMENT_CORS_ORIGINS, Settings

DEV_ORIGIN = DEVELOPMENT_CORS_ORIGINS[1]


def client(profile: str, **settings: Any) -> httpx.AsyncClient:
    app = create_app(Settings(GATEHOUSE_PROFILE=profile, **settings))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


@pytest.fixture
async def gateway() -> AsyncIterator[httpx.AsyncClient]:
    async with client(profile="development") as gateway:
        yield gateway


# Every path of docs/api.md (Routes) and what it answers, OPTIONS included.
ALLOW = {
    "/authors": "GET, POST, OPTIONS",
    "/authors/paginated": "GET, PUT, DELETE, OPTIONS",  # also an {id} to PUT and DELETE
    "/authors/7": "GET, PUT, DELETE, OPTIONS",
    "/audit-logs": "GET, OPTIONS",
    "/audit-logs/7": "GET, OPTIONS",
    "/audit-logs/user/someone": "GET, OPTIONS",
    "/health": "GET, OPTIONS",
    "/health/live": "GET, OPTIONS",
    "/health/ready": "GET, OPTIONS",
    "/openapi.json": "GET, HEAD, OPTIONS",
    "/docs": "GET, HEAD, OPTIONS",
    "/docs/static/swagger-ui.css": "GET, HEAD, OPTIONS",
    "/console": "GET, HEAD, OPTIONS",
    "/console/": "GET, HEAD, OPTIONS",
    "/console/static/console.js": "GET, HEAD, OPTIONS",
}


@pytest.mark.parametrize("path", ALLOW)
async def test_options_answers_204_with_every_method_of_the_path(
    gateway: httpx.AsyncClient, path: str
) -> None:
    response = await gateway.options(path)
    assert response.status_code == 204
    assert response.headers.get_list("allow") == [ALLOW[path]]
    assert response.content == b""
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/authors/7"),
        ("POST", "/authors/7"),
        ("DELETE", "/authors"),
        ("POST", "/health"),
        ("PUT", "/audit-logs/7"),
        ("POST", "/docs"),
        ("DELETE", "/docs/static/swagger-ui.css"),
        ("POST", "/console/"),
    ],
)
async def test_405_names_every_method_the_path_takes(
    gateway: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await gateway.request(method, path)
    assert response.status_code == 405
    assert response.headers.get_list("allow") == [ALLOW[path]]
    assert response.json() == {
        "error": {"code": "invalid_data", "msg": "Method Not Allowed", "details": None}
    }


async def test_options_of_a_path_no_route_takes_is_404(gateway: httpx.AsyncClient) -> None:
    response = await gateway.options("/nowhere")
    assert response.status_code == 404
    assert "allow" not in response.headers


def preflight(origin: str, method: str = "POST", headers: str = "authorization") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_a_preflight_from_an_allowed_origin_is_answered(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.options(
        "/authors/7", headers=preflight(DEV_ORIGIN, "PUT", "authorization, content-type, if-match")
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == DEV_ORIGIN
    assert response.headers["access-control-allow-methods"] == "GET, POST, PUT, DELETE"
    allowed = response.headers["access-control-allow-headers"].lower().split(", ")
    assert {"authorization", "content-type", "if-match", "if-none-match"} <= set(allowed)
    assert response.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in response.headers
    # The edge's headers, as on every answer.
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    ("headers", "disallowed"),
    [
        (preflight("https://elsewhere.example"), ["origin"]),
        (preflight(DEV_ORIGIN, "PATCH"), ["method"]),
        (preflight(DEV_ORIGIN, "GET", "authorization, x-secret"), ["headers"]),
    ],
)
async def test_a_refused_preflight_answers_in_the_error_shape(
    gateway: httpx.AsyncClient, headers: dict[str, str], disallowed: list[str]
) -> None:
    response = await gateway.options("/authors", headers=headers)
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalid_data",
            "msg": "cross-origin request not allowed",
            "details": {"disallowed": disallowed},
        }
    }
    if disallowed == ["origin"]:
        assert "access-control-allow-origin" not in response.headers


async def test_a_cross_origin_answer_names_its_origin_and_what_a_script_may_read(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.get("/openapi.json", headers={"Origin": DEV_ORIGIN})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == DEV_ORIGIN
    assert "Origin" in response.headers["vary"]
    exposed = response.headers["access-control-expose-headers"].split(", ")
    assert set(EXPOSED_HEADERS) <= set(exposed)
    assert {"RateLimit", "RateLimit-Policy", "Retry-After", "X-Request-ID"} <= set(exposed)
    foreign = await gateway.get("/openapi.json", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in foreign.headers
    plain = await gateway.get("/openapi.json")
    assert not [h for h in plain.headers if h.startswith("access-control-")]


async def test_production_allows_no_origin_unless_told() -> None:
    async with client(profile="production") as gateway:
        answered = await gateway.options("/authors", headers=preflight(DEV_ORIGIN))
        assert answered.status_code == 204
        assert answered.headers["allow"] == "GET, POST, OPTIONS"
        assert not [h for h in answered.headers if h.startswith("access-control-")]
        read = await gateway.get("/openapi.json", headers={"Origin": DEV_ORIGIN})
        assert not [h for h in read.headers if h.startswith("access-control-")]
    origin = "https://app.example"
    async with client(
        profile="production",
        cors_allowed_origins=(origin,),
        cors_allowed_methods=("GET",),
        cors_allowed_headers=("Authorization",),
        cors_max_age_seconds=60,
    ) as gateway:
        allowed = await gateway.options("/authors", headers=preflight(origin, "GET"))
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == origin
        assert allowed.headers["access-control-allow-methods"] == "GET"
        assert allowed.headers["access-control-max-age"] == "60"
        refused = await gateway.options("/authors", headers=preflight(origin, "POST"))
        assert refused.json()["error"]["details"] == {"disallowed": ["method"]}


async def test_an_empty_origin_list_turns_cors_off_in_development() -> None:
    async with client(profile="development", cors_allowed_origins=()) as gateway:
        answered = await gateway.options("/authors", headers=preflight(DEV_ORIGIN))
        assert answered.status_code == 204
        assert "access-control-allow-origin" not in answered.headers


def _same_origin_references(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', page) + re.findall(r"url: '([^']*)'", page)


async def test_the_docs_page_refers_to_nothing_but_its_own_origin(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    references = _same_origin_references(page)
    assert len(references) == 4, references
    assert not re.search(r"(?i)https?:|//", " ".join(references))
    assert "http" not in page.replace("http-equiv", "")
    for reference in references:
        asset = await gateway.get(reference)
        assert asset.status_code == 200, reference
        assert asset.content


async def test_the_docs_page_allows_its_one_inline_script_by_its_digest(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.get("/docs")
    [script] = re.findall(r"<script>(.*?)</script>", response.text, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = response.headers["content-security-policy"]
    assert policy == docs.CSP
    assert f"script-src 'self' 'sha256-{digest}';" in policy
    assert "unsafe-inline" not in policy
    assert "default-src 'none'" in policy
    # Everything else keeps the strict policy.
    strict = (await gateway.get("/openapi.json")).headers["content-security-policy"]
    assert strict == "default-src 'none'; frame-ancestors 'none'"
    css = await gateway.get("/docs/static/swagger-ui.css")
    assert css.headers["content-security-policy"] == strict
    assert css.headers["content-type"].startswith("text/css")


async def test_the_console_is_its_page_and_files_under_a_policy_of_this_origin_only(
    gateway: httpx.AsyncClient,
) -> None:
    moved = await gateway.get("/console")
    assert moved.status_code == 308
    assert moved.headers["location"] == "/console/"
    response = await gateway.get("/console/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    policy = response.headers["content-security-policy"]
    assert policy == console.CSP
    assert "script-src 'self';" in policy
    assert "connect-src 'self';" in policy
    assert "unsafe" not in policy
    page = response.text
    # No inline script, style or handler: the strict policy would refuse them.
    assert re.search(r"<script>|<style|\son[a-z]+=|style=", page) is None
    references = _same_origin_references(page)
    assert references == ["/console/static/console.css", "/console/static/console.js"]
    for reference in references:
        asset = await gateway.get(reference)
        assert asset.status_code == 200, reference
        assert asset.content
        assert asset.headers["content-security-policy"] == console.CSP
    script = await gateway.get("/console/static/console.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert (await gateway.get("/console/static/missing.js")).status_code == 404
