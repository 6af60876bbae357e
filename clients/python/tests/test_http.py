"""The HTTP client against a stubbed platform: retries, 429 and Retry-After, 401, errors."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from gatehouse_client.backoff import Backoff
from gatehouse_client.errors import (
    GatehouseError,
    NotFound,
    RateLimitExceeded,
    ServiceUnavailable,
    ValidationFailed,
)
from gatehouse_client.http import GatehouseClient, retry_after_seconds

AUTHOR = {
    "id": 7,
    "name": "Ada",
    "created_at": "2026-12-01T10:00:00Z",
    "updated_at": "2026-12-01T10:00:00Z",
}


class Tokens:
    def __init__(self) -> None:
        self.given = 0
        self.invalidated = 0

    async def token(self) -> str:
        self.given += 1
        return f"t{self.given}"

    def invalidate(self) -> None:
        self.invalidated += 1


class Platform:
    """Answers from a list, one per request, and keeps what was asked."""

    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        return answer(request) if callable(answer) else answer


def error(status: int, code: str, **extra: object) -> httpx.Response:
    headers = {"X-Request-ID": "req-1", **{k: str(v) for k, v in extra.items()}}
    return httpx.Response(
        status, json={"error": {"code": code, "msg": code, "details": None}}, headers=headers
    )


def client(
    platform: Platform, tokens: Tokens | None = None, **kwargs: object
) -> tuple[GatehouseClient, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    made = GatehouseClient(
        "http://gw.test/",
        tokens or Tokens(),
        transport=httpx.MockTransport(platform.handler),
        sleep=sleep,
        **kwargs,  # type: ignore[arg-type]
    )
    return made, slept


async def test_a_429_is_retried_after_its_retry_after() -> None:
    platform = Platform(
        error(429, "rate_limit_exceeded", **{"Retry-After": 2}),
        httpx.Response(201, json=AUTHOR, headers={"ETag": '"1"'}),
    )
    gatehouse, slept = client(platform)
    async with gatehouse:
        author = await gatehouse.create_author("Ada")
    assert author.id == 7
    assert author.etag == '"1"'
    assert slept == [2.0]
    assert [r.method for r in platform.requests] == ["POST", "POST"]
    assert json.loads(platform.requests[1].content) == {"name": "Ada"}


async def test_429s_beyond_the_retries_raise_rate_limit_exceeded() -> None:
    platform = Platform(*[error(429, "rate_limit_exceeded", **{"Retry-After": 1})] * 3)
    gatehouse, slept = client(platform, max_retries=2)
    with pytest.raises(RateLimitExceeded) as refused:
        await gatehouse.list_authors()
    assert slept == [1.0, 1.0]
    assert refused.value.status == 429
    assert refused.value.request_id == "req-1"


async def test_a_retry_after_longer_than_allowed_raises_at_once() -> None:
    platform = Platform(error(429, "rate_limit_exceeded", **{"Retry-After": 120}))
    gatehouse, slept = client(platform, max_retry_wait=30)
    with pytest.raises(RateLimitExceeded):
        await gatehouse.get_author(7)
    assert slept == []


async def test_a_401_gets_one_fresh_token_then_raises() -> None:
    tokens = Tokens()
    platform = Platform(
        error(401, "authentication_failed"),
        httpx.Response(200, json=[AUTHOR]),
        error(401, "authentication_failed"),
        error(401, "authentication_failed"),
    )
    gatehouse, _ = client(platform, tokens)
    assert [a.name for a in await gatehouse.list_authors(name="Ada")] == ["Ada"]
    assert [r.headers["authorization"] for r in platform.requests] == ["Bearer t1", "Bearer t2"]
    assert platform.requests[1].url.params["name"] == "Ada"
    with pytest.raises(GatehouseError) as refused:
        await gatehouse.list_authors()
    assert refused.value.code == "authentication_failed"
    assert tokens.invalidated == 2


async def test_503_is_retried_for_reads_but_never_for_a_create() -> None:
    platform = Platform(
        error(503, "service_unavailable", **{"Retry-After": 1}),
        httpx.Response(200, json=AUTHOR),
        error(503, "service_unavailable", **{"Retry-After": 1}),
    )
    gatehouse, slept = client(platform)
    assert (await gatehouse.get_author(7)).name == "Ada"
    with pytest.raises(ServiceUnavailable):
        await gatehouse.create_author("Ada")
    assert slept == [1.0]


async def test_a_broken_connection_is_retried_for_reads_with_backoff() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    platform = Platform(broken, broken, httpx.Response(204))
    gatehouse, slept = client(platform)
    await gatehouse.delete_author(7, if_match='"3"')
    assert len(slept) == 2
    assert platform.requests[-1].headers["if-match"] == '"3"'
    platform = Platform(broken)
    gatehouse, _ = client(platform)
    with pytest.raises(ServiceUnavailable, match="could not be reached"):
        await gatehouse.create_author("x")


async def test_errors_raise_their_exception_with_details() -> None:
    platform = Platform(
        httpx.Response(
            400,
            json={
                "error": {
                    "code": "validation_error",
                    "msg": "invalid",
                    "details": [{"field": "name", "msg": "too long"}],
                }
            },
        ),
        error(404, "not_found"),
        httpx.Response(431, text="431 Request Header Fields Too Large"),
    )
    gatehouse, _ = client(platform)
    with pytest.raises(ValidationFailed) as invalid:
        await gatehouse.update_author(7, "x" * 300)
    assert invalid.value.details == [{"field": "name", "msg": "too long"}]
    with pytest.raises(NotFound):
        await gatehouse.get_author(8)
    with pytest.raises(GatehouseError, match="431 error: 431 Request Header Fields"):
        await gatehouse.list_authors()


async def test_every_author_is_read_page_after_page_by_cursor() -> None:
    def page(ids: list[int], cursor: str | None) -> httpx.Response:
        meta = {
            "page": 1,
            "per_page": 2,
            "total": 3,
            "pages": 2,
            "next_cursor": cursor,
            "has_more": cursor is not None,
            "total_is_estimate": False,
        }
        return httpx.Response(200, json={"items": [AUTHOR | {"id": i} for i in ids], "meta": meta})

    platform = Platform(page([1, 2], "c2"), page([3], None))
    gatehouse, _ = client(platform)
    assert [a.id async for a in gatehouse.iter_authors(per_page=2)] == [1, 2, 3]
    assert "cursor" not in platform.requests[0].url.params
    assert platform.requests[1].url.params["cursor"] == "c2"


async def test_audit_logs_and_health() -> None:
    meta = {"page": 1, "per_page": 50, "total": 1, "pages": 1, "next_cursor": None}
    platform = Platform(httpx.Response(200, json={"items": [{"id": 1}], "meta": meta}))
    gatehouse, _ = client(platform)
    logs = await gatehouse.audit_logs(outcome="error")
    assert logs.items == [{"id": 1}]
    assert logs.meta.has_more is False
    assert platform.requests[0].url.params["outcome"] == "error"
    platform.answers.append(httpx.Response(200, json={"status": "healthy"}))
    assert await gatehouse.health() == {"status": "healthy"}
    assert "authorization" not in platform.requests[-1].headers


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = datetime(2026, 12, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=5), usegmt=True)
    assert retry_after_seconds(date, now=now.timestamp()) == 5.0
    assert retry_after_seconds(format_datetime(now, usegmt=True), now=now.timestamp() + 9) == 0.0


async def test_each_call_backs_off_from_the_start_whatever_others_did() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    shared = Backoff(initial=1.0, maximum=64.0, rng=random.Random(5))
    platform = Platform(broken, broken, httpx.Response(200, json=AUTHOR))
    gatehouse, slept = client(platform, backoff=shared)
    await gatehouse.get_author(7)
    platform.answers += [broken, httpx.Response(200, json=AUTHOR)]
    await gatehouse.get_author(7)
    # The ceilings 1, 2, then 1 again for the second call: never 4.
    assert all(wait <= ceiling for wait, ceiling in zip(slept, [1.0, 2.0, 1.0], strict=True))
    assert shared.attempt == 0
