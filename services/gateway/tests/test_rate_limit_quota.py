"""Rate limiting from quota over the LeaseQuota stream, with real services on real Redis:
two gateways together admit at most the limit and nearly all of it, a rules change
reaches the gateway within a lease, and while the stream is down the gateway's fail mode
decides (counted), until the stream opens again by itself."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from prometheus_client import REGISTRY

from gatehouse_ratelimit.__main__ import RunningService, build
from gatehouse_ratelimit.settings import Settings as RateLimitSettings
from gatehouse_ratelimit.store import joined_key
from services.gateway.tests.conftest import Upstreams, gateway_settings, running_gateway
from services.gateway.tests.tokens import Realm
from tests.harness.backends import Backend
from tests.harness.private import free_port

LIMIT = 50
RULES = f"""
domains:
  http:
    descriptors:
      - name: http_per_user
        descriptor: [{{key: user}}]
        limits: {{default: {{requests_per_unit: {LIMIT}, unit: minute}}}}
      - name: http_per_ip
        descriptor: [{{key: remote_address}}]
        limits: {{default: {{requests_per_unit: 100000, unit: minute}}}}
"""
# docs/ratelimit.md, Precision: a replica holds at most one grant of a descriptor, and a
# grant is at most an eighth of the room left (at least one hit).
GATEWAYS = 2
UNDER_BOUND = GATEWAYS * max(1, LIMIT // 8)


GatewayOf = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def bearer(realm: Realm, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {realm.token('viewer', sub=user)}"}


class Ratelimit:
    """A ratelimit service of the test's own (own rules, own key prefix) on a fixed port,
    which the test may stop and start again."""

    def __init__(self, redis_url: str, rules: Path) -> None:
        self.settings = RateLimitSettings(
            redis_url=redis_url,
            grpc_port=free_port(),
            rules_path=rules,
            key_prefix=f"test:{uuid.uuid4().hex}:",
            rules_reload_debounce_ms=50,
            # Generous: the machine running the tests is shared and busy.
            redis_timeout_ms=2000,
            # The gateways' quota streams stay open: do not wait long for them to end.
            shutdown_grace_seconds=0.2,
        )
        self.running: RunningService | None = None

    @property
    def target(self) -> dict[str, Any]:
        return {
            "ratelimit_target": f"127.0.0.1:{self.settings.grpc_port}",
            "ratelimit_authority": "",
        }

    async def start(self) -> None:
        self.running = await build(self.settings)
        await self.running.grpc.start()

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.stop()
            self.running = None

    async def window_sum(self, user: str) -> int:
        """The hits counted in the user's window of the `http` domain now."""
        key = f"{self.settings.key_prefix}window:{joined_key('http', 'user', user)}:sum"
        client = redis.Redis.from_url(self.settings.redis_url)
        try:
            return int(await client.get(key) or 0)
        finally:
            await client.aclose()


@pytest.fixture
async def ratelimit(redis_server: Backend, tmp_path: Path) -> AsyncIterator[Ratelimit]:
    rules = tmp_path / "rules" / "rules.yaml"
    rules.parent.mkdir()
    rules.write_text(RULES)
    service = Ratelimit(redis_server.url, rules)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
def gateway_of(
    upstreams: Upstreams, redis_server: Backend, realm: Realm, ratelimit: Ratelimit
) -> GatewayOf:
    """gateway_of(**settings): a running gateway on the test's ratelimit service."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = gateway_settings(upstreams, redis_server.url, **ratelimit.target, **overrides)
        async with running_gateway(settings, realm) as (_, client):
            yield client

    return start


async def until(condition: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not await condition():  # noqa: ASYNC110 (polling the service and the gateway)
            await asyncio.sleep(0.05)


async def test_two_gateways_admit_at_most_the_limit_and_nearly_all_of_it(
    gateway_of: GatewayOf, ratelimit: Ratelimit, realm: Realm
) -> None:
    user = f"quota-{uuid.uuid4().hex}"
    headers = bearer(realm, user)
    refills = metric("gateway_rate_limit_refills_total", domain="http", result="granted")
    fail_open = metric("gateway_rate_limit_decisions_total", domain="http", result="fail_open")
    # Generous: on a shared, busy machine a refill may take longer than the default half
    # second, after which the fail mode decides, which the precision bound does not cover.
    patient = {"ratelimit_deadline_seconds": 10.0}
    async with gateway_of(**patient) as one, gateway_of(**patient) as two:
        gateways = (one, two)
        slots = asyncio.Semaphore(16)

        async def get(i: int) -> tuple[int, httpx.Response]:
            async with slots:
                return i % 2, await gateways[i % 2].get("/authors", headers=headers)

        # Three times the limit, alternately and concurrently at both gateways.
        answers = await asyncio.gather(*(get(i) for i in range(3 * LIMIT)))
        admitted = [(k, r) for k, r in answers if r.status_code == 200]
        refused = [r for _, r in answers if r.status_code == 429]
        assert len(admitted) + len(refused) == 3 * LIMIT
        assert metric("gateway_rate_limit_decisions_total", domain="http", result="fail_open") == (
            fail_open
        ), "the fail mode decided: the quota stream did not answer within the deadline"
        assert LIMIT - UNDER_BOUND <= len(admitted) <= LIMIT
        assert {k for k, _ in admitted} == {0, 1}
        for response in refused:
            assert response.headers["x-ratelimit-limit"] == str(LIMIT)
            assert response.headers["x-ratelimit-remaining"] == "0"
            retry_after = int(response.headers["retry-after"])
            assert 1 <= retry_after <= 61
            # The draft's fields name the rule that refused, with nothing left of it.
            assert response.headers["ratelimit-policy"] == f'"http_per_user";q={LIMIT};w=60'
            reset = response.headers["x-ratelimit-reset"]
            assert response.headers["ratelimit"] == f'"http_per_user";r=0;t={reset}'
            assert retry_after == max(1, int(reset))
            assert len(response.headers.get_list("retry-after")) == 1
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
        # The service heard far fewer requests than the gateways answered.
        asked = metric("gateway_rate_limit_refills_total", domain="http", result="granted")
        assert asked - refills < len(admitted)
        # The window held every admitted request, and the hits the gateways held unspent.
        assert len(admitted) <= await ratelimit.window_sum(user) <= LIMIT
    # Closed, both gateways gave back what they held: the window holds what was admitted.
    assert await ratelimit.window_sum(user) == len(admitted)


async def test_a_rules_change_reaches_the_gateway_within_a_lease(
    gateway_of: GatewayOf, ratelimit: Ratelimit, realm: Realm
) -> None:
    headers = bearer(realm, f"quota-{uuid.uuid4().hex}")
    async with gateway_of() as gateway:
        first = await gateway.get("/authors", headers=headers)
        assert first.headers["x-ratelimit-limit"] == str(LIMIT)
        running = ratelimit.running
        assert running is not None
        rules = running.rules
        digest = rules.rules.digest
        await asyncio.to_thread(
            rules.path.write_text,
            rules.path.read_text().replace(
                f"requests_per_unit: {LIMIT},", "requests_per_unit: 70,"
            ),
        )

        async def reloaded() -> bool:
            return rules.rules.digest != digest

        await until(reloaded)
        changed = time.monotonic()

        async def new_limit() -> bool:
            response = await gateway.get("/authors", headers=headers)
            return response.headers["x-ratelimit-limit"] == "70"

        await until(new_limit)
        # The lease of the grant in force ends within a second (docs/ratelimit.md, Rules).
        assert time.monotonic() - changed < 1.0 + 0.5


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_while_the_stream_is_down_the_fail_mode_decides_until_it_opens_again(
    gateway_of: GatewayOf, ratelimit: Ratelimit, realm: Realm, fail_mode: str
) -> None:
    async with gateway_of(rate_limit_fail_mode=fail_mode) as gateway:
        before = await gateway.get("/authors", headers=bearer(realm, f"up-{uuid.uuid4().hex}"))
        assert before.status_code == 200
        assert metric("gateway_rate_limit_quota_stream_up") == 1
        unreachable = metric("gateway_rate_limit_unreachable_total", fail_mode=fail_mode)
        result = "fail_open" if fail_mode == "open" else "unavailable"
        decided = metric("gateway_rate_limit_decisions_total", domain="http", result=result)

        await ratelimit.stop()
        down = await gateway.get("/authors", headers=bearer(realm, f"down-{uuid.uuid4().hex}"))
        if fail_mode == "open":
            assert down.status_code == 200
            assert "x-ratelimit-limit" not in down.headers
        else:
            assert down.status_code == 503
            assert down.json()["error"]["details"] == {"service": "ratelimit"}
        assert metric("gateway_rate_limit_unreachable_total", fail_mode=fail_mode) == (
            unreachable + 1
        )
        assert metric("gateway_rate_limit_decisions_total", domain="http", result=result) == (
            decided + 1
        )
        assert metric("gateway_rate_limit_quota_stream_up") == 0

        await ratelimit.start()

        async def limited_again() -> bool:
            user = f"back-{uuid.uuid4().hex}"
            response = await gateway.get("/authors", headers=bearer(realm, user))
            return response.status_code == 200 and "x-ratelimit-limit" in response.headers

        await until(limited_again)
        assert metric("gateway_rate_limit_quota_stream_up") == 1


async def test_a_service_back_within_the_deadline_costs_no_request_its_decision(
    gateway_of: GatewayOf, ratelimit: Ratelimit, realm: Realm
) -> None:
    async with gateway_of(rate_limit_fail_mode="closed", ratelimit_deadline_seconds=5.0) as gateway:
        assert (await gateway.get("/authors", headers=bearer(realm, "before"))).status_code == 200
        unreachable = metric("gateway_rate_limit_unreachable_total", fail_mode="closed")
        await ratelimit.stop()
        # Asked while the service is away, answered once it is back (a replica restarting).
        during = asyncio.create_task(
            gateway.get("/authors", headers=bearer(realm, f"during-{uuid.uuid4().hex}"))
        )
        await asyncio.sleep(0.3)
        assert not during.done()
        await ratelimit.start()
        response = await during
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == str(LIMIT)
        assert metric("gateway_rate_limit_unreachable_total", fail_mode="closed") == unreachable
