"""One rate limit across the running platform's two gateway replicas, decided in each from
quota leased over its LeaseQuota stream through Traefik (docs/ratelimit.md, Quota).

A burst of requests without a token from one client address of its own, spread over
both replicas, counts against that address's limit only: admitted requests answer 401,
refused ones 429. Together the replicas admit at most the limit, and at most the hits
the other replica holds fewer.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.conftest import own_address
from tests.e2e.replicas import REPLICAS, counter, http_url, two_replicas
from tests.harness.stack import Stack

# The shipped per-address limits (deploy/ratelimit/rules.yaml) are 300 and 3000 a minute;
# the burst is half as large again as the limit the replicas report.
BURST_FACTOR = 1.5
LARGEST_LIMIT = 3000
CONCURRENCY = 16


@pytest.fixture(scope="module")
def replicated(stack: Stack) -> Stack:
    """The stack with two replicas of every service."""
    two_replicas(stack)
    return stack


async def test_the_replicas_hold_one_quota_stream_each_through_traefik(replicated: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as metrics:
        for k in range(REPLICAS):
            up = await counter(metrics, "gateway", k, "gateway_rate_limit_quota_stream_up")
            assert up == 1, f"gateway-{k} has no quota stream"
        streams = [
            await counter(metrics, "ratelimit", k, "rate_limit_quota_streams")
            for k in range(REPLICAS)
        ]
    assert sum(streams) >= REPLICAS, streams


async def test_two_replicas_admit_at_most_the_address_limit_and_nearly_all_of_it(
    replicated: Stack,
) -> None:
    async with httpx.AsyncClient(timeout=20, headers={"X-Forwarded-For": own_address()}) as web:
        first = await web.get(f"{http_url(0)}/authors")
        assert first.status_code == 401, first.text
        limit = int(first.headers["x-ratelimit-limit"])
        assert limit <= LARGEST_LIMIT, f"the per-address limit is raised to {limit}"
        slots = asyncio.Semaphore(CONCURRENCY)

        async def get(i: int) -> tuple[int, int]:
            k = i % REPLICAS
            async with slots:
                return k, (await web.get(f"{http_url(k)}/authors")).status_code

        answers = [(0, first.status_code)] + await asyncio.gather(
            *(get(i) for i in range(1, int(BURST_FACTOR * limit)))
        )
        refusal = await web.get(f"{http_url(1)}/authors")
    admitted = [k for k, status in answers if status == 401]
    refused = [k for k, status in answers if status == 429]
    assert len(admitted) + len(refused) == len(answers), {s for _, s in answers}
    # docs/ratelimit.md, Precision: never more than the limit; fewer by at most one grant
    # per replica, each at most an eighth of the limit (and at most 100 hits).
    bound = REPLICAS * min(100, max(1, limit // 8))
    assert limit - bound <= len(admitted) <= limit
    assert set(admitted) == set(range(REPLICAS))
    assert refusal.status_code == 429
    assert refusal.headers["x-ratelimit-remaining"] == "0"
    assert int(refusal.headers["retry-after"]) >= 1
    assert refusal.json()["error"]["code"] == "rate_limit_exceeded"
