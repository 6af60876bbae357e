"""LeaseQuota through gRPC: one stream answering requests by id, partial grants, leases,
giving back, shadow and unlimited rules, hot reload, bad requests, the fail modes and the
metrics each of them moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from gatehouse_protos.ratelimit.v1 import ratelimit_pb2 as pb
from tests.harness.private import PrivateRedis

if TYPE_CHECKING:
    from gatehouse_protos.ratelimit.v1.ratelimit_pb2_grpc import (
        RateLimitServiceAsyncStub as Stub,
    )
    from gatehouse_ratelimit.__main__ import RunningService

    StartService = Callable[..., Awaitable[tuple[RunningService, Stub]]]

Metric = Callable[..., float]
Until = Callable[..., Awaitable[None]]


def demand(
    key: str, value: str, hits: int = 1, reservation: str = "", returned: int = 0
) -> pb.QuotaDemand:
    entry = pb.RateLimitDescriptor.Entry(key=key, value=value)
    descriptor = pb.RateLimitDescriptor(entries=[entry])
    return pb.QuotaDemand(
        descriptor=descriptor, hits=hits, returned_reservation=reservation, returned_hits=returned
    )


async def next_grant(call: Any) -> pb.QuotaGrant:
    grant = await asyncio.wait_for(call.read(), 5)
    assert isinstance(grant, pb.QuotaGrant)
    return grant


def seconds(duration: Any) -> float:
    return float(duration.ToTimedelta().total_seconds())


class Quota:
    """One LeaseQuota stream; `ask` sends a request and waits for the grant of its id."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self._next = 0

    async def ask(
        self, *demands: pb.QuotaDemand, domain: str = "api", tier: str = ""
    ) -> pb.QuotaGrant:
        self._next += 1
        await self.call.write(
            pb.QuotaRequest(id=self._next, domain=domain, tier=tier, demands=demands)
        )
        grant = await next_grant(self.call)
        assert grant.id == self._next
        return grant


@asynccontextmanager
async def quota_stream(stub: Stub) -> AsyncIterator[Quota]:
    call = stub.LeaseQuota()
    try:
        yield Quota(call)
    finally:
        call.cancel()


async def test_grants_answer_by_id_up_to_the_limit_with_a_short_lease(
    stub: Stub, metric: Metric
) -> None:
    requests_before = metric("rate_limit_quota_requests_total", domain="api", result="ok")
    granted_before = metric("rate_limit_quota_hits_total", domain="api", result="granted")
    ok_before = metric("rate_limit_decisions_total", domain="api", result="ok")
    over_before = metric("rate_limit_decisions_total", domain="api", result="over_limit")
    async with quota_stream(stub) as quota:
        # per_user: 5 a second; a grant takes at most an eighth of the room, one hit here.
        first = await quota.ask(demand("user", "quinn", hits=3))
        [q] = first.quotas
        assert (q.granted_hits, q.limit_remaining, q.shadow_mode) == (1, 4, False)
        assert (q.current_limit.name, q.current_limit.requests_per_unit) == ("per_user", 5)
        assert q.reservation
        # A tenth of the one-second window.
        assert seconds(q.lease_duration) == 0.1
        assert 1.0 < seconds(q.duration_until_reset) <= 1.1
        for _ in range(4):
            assert (await quota.ask(demand("user", "quinn"))).quotas[0].granted_hits == 1
        [refused] = (await quota.ask(demand("user", "quinn", hits=2))).quotas
        assert (refused.granted_hits, refused.limit_remaining, refused.reservation) == (0, 0, "")
        assert 0 < seconds(refused.duration_until_reset) <= 1.1
    assert metric("rate_limit_quota_requests_total", domain="api", result="ok") == (
        requests_before + 6
    )
    assert metric("rate_limit_quota_hits_total", domain="api", result="granted") == (
        granted_before + 5
    )
    assert metric("rate_limit_decisions_total", domain="api", result="ok") == ok_before + 5
    assert metric("rate_limit_decisions_total", domain="api", result="over_limit") == (
        over_before + 2
    )


async def test_requests_in_flight_together_are_each_answered_once(stub: Stub) -> None:
    call = stub.LeaseQuota()
    try:
        for i in range(1, 41):
            await call.write(pb.QuotaRequest(id=i, domain="api", demands=[demand("user", "rio")]))
        grants = [await next_grant(call) for _ in range(40)]
        await call.done_writing()
        assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
    finally:
        call.cancel()
    assert sorted(g.id for g in grants) == list(range(1, 41))
    assert sum(g.quotas[0].granted_hits for g in grants) == 5


async def test_unspent_hits_given_back_are_granted_again(stub: Stub, metric: Metric) -> None:
    returned_before = metric("rate_limit_quota_hits_total", domain="api", result="returned")
    async with quota_stream(stub) as quota:
        held = []
        for _ in range(5):
            held.append((await quota.ask(demand("user", "gus"))).quotas[0].reservation)
        assert (await quota.ask(demand("user", "gus"))).quotas[0].granted_hits == 0
        [back] = (await quota.ask(demand("user", "gus", 1, held[0], 1))).quotas
        assert (back.granted_hits, back.limit_remaining) == (1, 0)
        await quota.ask(demand("user", "gus", 0, held[1], 1))
        await quota.ask(demand("user", "gus", 0, held[1], 1))
    assert metric("rate_limit_quota_hits_total", domain="api", result="returned") == (
        returned_before + 2
    )


async def test_shadow_and_unlimited_descriptors_get_everything_wanted(
    stub: Stub, metric: Metric
) -> None:
    shadow_before = metric("rate_limit_decisions_total", domain="api", result="shadow_over_limit")
    async with quota_stream(stub) as quota:
        # per_path is a shadow rule of 2 a second; trusted_ip is unlimited; tenant unmatched.
        grant = await quota.ask(
            demand("path", "/a", hits=5),
            demand("remote_address", "10.0.0.1", hits=7),
            demand("tenant", "t", hits=9),
        )
    shadow, unlimited, unmatched = grant.quotas
    assert (shadow.granted_hits, shadow.shadow_mode, shadow.limit_remaining) == (5, True, 0)
    assert shadow.current_limit.requests_per_unit == 2
    assert (unlimited.granted_hits, unmatched.granted_hits) == (7, 9)
    assert not unlimited.HasField("current_limit")
    assert not unmatched.HasField("current_limit")
    # No window to fit in: the whole configured lease.
    assert seconds(unlimited.lease_duration) == 1.0
    after = metric("rate_limit_decisions_total", domain="api", result="shadow_over_limit")
    assert after == shadow_before + 3


def lower_per_user_limit(path: Path) -> None:
    path.write_text(path.read_text().replace("requests_per_unit: 5,", "requests_per_unit: 2,"))


async def test_a_rules_change_applies_to_the_next_grant(
    running: RunningService, stub: Stub, metric: Metric, until: Until, rules_path: Path
) -> None:
    async with quota_stream(stub) as quota:
        [before] = (await quota.ask(demand("user", "hal"))).quotas
        assert before.current_limit.requests_per_unit == 5
        reloads = metric("rate_limit_rules_reloads_total", result="ok")
        await asyncio.to_thread(lower_per_user_limit, rules_path)
        await until(lambda: metric("rate_limit_rules_reloads_total", result="ok") > reloads)
        [after] = (await quota.ask(demand("user", "hal"))).quotas
        assert (after.current_limit.requests_per_unit, after.granted_hits) == (2, 1)
        assert (await quota.ask(demand("user", "hal"))).quotas[0].granted_hits == 0


async def test_a_bad_request_is_answered_with_its_fields_and_the_stream_goes_on(
    stub: Stub, metric: Metric
) -> None:
    invalid_before = metric("rate_limit_quota_requests_total", domain="api", result="invalid")
    async with quota_stream(stub) as quota:
        bad = await quota.ask(demand("", "x", hits=5000), demand("user", "ivy", 1, "", 3))
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert not bad.quotas
        for field in (
            "demands[0].descriptor.entries[0].key",
            "demands[0].hits",
            "demands[1].returned_reservation",
        ):
            assert field in bad.message
        assert (await quota.ask(demand("user", "ivy"))).quotas[0].granted_hits == 1
        empty = await quota.ask(domain="")
        assert empty.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "domain" in empty.message
    after = metric("rate_limit_quota_requests_total", domain="api", result="invalid")
    assert after == invalid_before + 1


async def test_the_streams_gauge_counts_open_streams(
    stub: Stub, metric: Metric, until: Until
) -> None:
    before = metric("rate_limit_quota_streams")
    async with quota_stream(stub) as one, quota_stream(stub) as two:
        await one.ask(demand("user", "sam"))
        await two.ask(demand("user", "sam"))
        assert metric("rate_limit_quota_streams") == before + 2
    await until(lambda: metric("rate_limit_quota_streams") == before)


async def test_fail_open_grants_everything_wanted_until_redis_returns(
    private_redis: PrivateRedis, start_service: StartService, metric: Metric
) -> None:
    _, stub = await start_service(private_redis.url, fail_mode="open", redis_timeout_ms=100)
    async with quota_stream(stub) as quota:
        assert not (await quota.ask(demand("user", "olga"))).fail_open
        fail_open = metric("rate_limit_fail_open_total")
        requests = metric("rate_limit_quota_requests_total", domain="api", result="fail_open")
        private_redis.stop()
        grant = await quota.ask(demand("user", "olga", hits=40))
        assert (grant.code, grant.fail_open) == (0, True)
        [q] = grant.quotas
        assert (q.granted_hits, q.HasField("current_limit")) == (40, False)
        assert seconds(q.lease_duration) == 1.0
        assert metric("rate_limit_fail_open_total") == fail_open + 1
        assert metric("rate_limit_quota_requests_total", domain="api", result="fail_open") == (
            requests + 1
        )
        private_redis.start()
        [q] = (await quota.ask(demand("user", "olga"))).quotas
        assert q.granted_hits == 1
        assert q.HasField("current_limit")


async def test_fail_closed_answers_unavailable_for_the_request_and_the_stream_goes_on(
    private_redis: PrivateRedis, start_service: StartService, metric: Metric
) -> None:
    _, stub = await start_service(private_redis.url, fail_mode="closed", redis_timeout_ms=100)
    async with quota_stream(stub) as quota:
        await quota.ask(demand("user", "cleo"))
        errors = metric("rate_limit_backend_errors_total")
        unavailable = metric("rate_limit_quota_requests_total", domain="api", result="unavailable")
        private_redis.stop()
        refused = await quota.ask(demand("user", "cleo"))
        assert refused.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert not refused.quotas
        assert metric("rate_limit_backend_errors_total") == errors + 1
        after = metric("rate_limit_quota_requests_total", domain="api", result="unavailable")
        assert after == unavailable + 1
        private_redis.start()
        [q] = (await quota.ask(demand("user", "cleo"))).quotas
        assert (q.granted_hits, q.limit_remaining) == (1, 4)
