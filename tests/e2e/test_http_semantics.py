"""HTTP as clients expect it, through Traefik :8080 (docs/api.md): the rate-limit fields of
draft-ietf-httpapi-ratelimit-headers beside the legacy `X-RateLimit-*`, `Retry-After` on
429, the Bearer challenge of RFC 6750, the real `Allow` on 405 and OPTIONS, preflights of
the development profile's origins, and the docs page served whole by the platform."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.e2e.conftest import DEV_ORIGIN, Tokens, own_address
from tests.harness.stack import Stack

# The shipped rules of the `http` domain (deploy/ratelimit/rules.yaml), default tier.
USER_POLICY = '"http_per_user";q=100;w=60'
IP_POLICY = '"http_per_ip";q=300;w=60'
CHALLENGE = 'Bearer realm="gatehouse"'
_RULE = re.compile(r'"(?P<name>[a-z_]+)";r=(?P<r>\d+);t=(?P<t>\d+)')


def rules(response: httpx.Response) -> list[tuple[str, int, int]]:
    """The members of `RateLimit`: (name, remaining, reset seconds)."""
    [field] = response.headers.get_list("RateLimit")
    members = []
    for member in field.split(", "):
        match = _RULE.fullmatch(member)
        assert match is not None, field
        members.append((match["name"], int(match["r"]), int(match["t"])))
    return members


async def test_an_admitted_request_reports_every_rule_it_counted_against(
    web: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await web.get("/authors?id=1", headers=await tokens.headers("viewer"))
    assert response.status_code == 200, response.text
    members = rules(response)
    # Both rules, the one with the least left first (other tests spend the viewer's).
    assert {name for name, _, _ in members} == {"http_per_user", "http_per_ip"}
    assert members[0][1] == min(left for _, left, _ in members)
    policies = {"http_per_user": USER_POLICY, "http_per_ip": IP_POLICY}
    assert response.headers.get_list("RateLimit-Policy") == [
        ", ".join(policies[name] for name, _, _ in members)
    ]
    limits = {"http_per_user": 100, "http_per_ip": 300}
    for name, left, reset in members:
        assert 0 <= left < limits[name]
        assert 0 < reset <= 61
    # The legacy headers, kept for the replaced application's clients: the tightest rule.
    tightest, left, reset = members[0]
    assert response.headers["X-RateLimit-Limit"] == str(limits[tightest])
    assert response.headers["X-RateLimit-Remaining"] == str(left)
    assert response.headers["X-RateLimit-Reset"] == str(reset)
    assert "Retry-After" not in response.headers


async def test_a_refused_request_says_when_to_retry(stack: Stack) -> None:
    # Requests without a token count against their address alone: a burst from an
    # address of its own spends its limit and is then refused.
    async with httpx.AsyncClient(
        base_url=stack.web_url, headers={"X-Forwarded-For": own_address()}, timeout=20
    ) as web:
        first = await web.get("/authors")
        assert first.status_code == 401, first.text
        assert first.headers["RateLimit-Policy"] == IP_POLICY
        [(name, left, _)] = rules(first)
        assert (name, left) == ("http_per_ip", 299)
        slots = asyncio.Semaphore(16)

        async def get() -> httpx.Response:
            async with slots:
                return await web.get("/authors")

        answers = await asyncio.gather(*(get() for _ in range(400)))
        refused = [r for r in answers if r.status_code == 429]
    assert refused, {r.status_code for r in answers}
    for response in refused:
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        [retry_after] = response.headers.get_list("Retry-After")
        assert response.headers["RateLimit-Policy"] == IP_POLICY
        [(name, left, reset)] = rules(response)
        assert (name, left) == ("http_per_ip", 0)
        assert int(retry_after) == max(1, reset) <= 61
        assert response.json()["error"]["details"] == {"retry_after": int(retry_after)}
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert response.headers["X-RateLimit-Reset"] == str(reset)


async def test_401_challenges_with_an_error_code_only_for_a_refused_token(
    web: httpx.AsyncClient, tokens: Tokens
) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        anonymous = await web.get("/authors", headers=headers)
        assert anonymous.status_code == 401
        assert anonymous.headers.get_list("WWW-Authenticate") == [CHALLENGE]
    token = await tokens.get("viewer")
    refused = await web.get("/authors", headers={"Authorization": f"Bearer {token}x"})
    assert refused.status_code == 401
    assert refused.headers.get_list("WWW-Authenticate") == [
        f'{CHALLENGE}, error="invalid_token", error_description="malformed token"'
    ]
    fast_path = await web.get("/authors/1", headers={"Authorization": "Bearer nonsense"})
    assert fast_path.headers["WWW-Authenticate"].startswith(f'{CHALLENGE}, error="invalid_token"')


async def test_405_and_options_name_every_method_of_the_path(
    web: httpx.AsyncClient, tokens: Tokens
) -> None:
    editor = await tokens.headers("editor")
    expected = {
        "/authors": "GET, POST, OPTIONS",
        "/authors/1": "GET, PUT, DELETE, OPTIONS",
        "/audit-logs": "GET, OPTIONS",
        "/health/live": "GET, OPTIONS",
        "/docs": "GET, HEAD, OPTIONS",
    }
    for path, allow in expected.items():
        options = await web.options(path)
        assert options.status_code == 204, (path, options.text)
        assert options.headers.get_list("Allow") == [allow], path
        refused = await web.patch(path, headers=editor, json={})
        assert refused.status_code == 405, (path, refused.text)
        assert refused.headers.get_list("Allow") == [allow], path
        assert refused.json()["error"]["code"] == "invalid_data"


async def test_a_preflight_from_an_allowed_origin_is_answered_and_others_are_not(
    web: httpx.AsyncClient,
) -> None:
    asked = {
        "Origin": DEV_ORIGIN,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization, content-type, if-match",
    }
    allowed = await web.options("/authors/1", headers=asked)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["Access-Control-Allow-Origin"] == DEV_ORIGIN
    assert "PUT" in allowed.headers["Access-Control-Allow-Methods"].split(", ")
    assert allowed.headers["X-Frame-Options"] == "DENY"
    foreign = await web.options("/authors/1", headers={**asked, "Origin": "https://evil.example"})
    assert foreign.status_code == 400
    assert foreign.json()["error"]["details"] == {"disallowed": ["origin"]}
    assert "Access-Control-Allow-Origin" not in foreign.headers


async def test_the_docs_page_and_its_assets_are_served_by_the_platform(
    web: httpx.AsyncClient,
) -> None:
    page = await web.get("/docs")
    assert page.status_code == 200
    references = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert references, page.text
    assert "http:" not in page.text
    assert "https:" not in page.text
    for reference in references:
        assert reference.startswith("/docs/static/"), reference
        asset = await web.get(reference, headers={"Accept-Encoding": "gzip"})
        assert asset.status_code == 200, reference
        assert len(asset.content) > 500, reference
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
