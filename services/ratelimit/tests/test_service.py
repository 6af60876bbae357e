"""ShouldRateLimit through gRPC against the shared Redis: limits, tiers, shadow, overrides,
bad requests and the metrics each of them moves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
import pytest

from gatehouse_protos.ratelimit.v1 import ratelimit_pb2 as pb

SERVICE = "gatehouse.ratelimit.v1.RateLimitService"

if TYPE_CHECKING:
    from gatehouse_protos.ratelimit.v1.ratelimit_pb2_grpc import (
        RateLimitServiceAsyncStub as Stub,
    )

Decide = Callable[..., Awaitable[pb.RateLimitResponse]]
Metric = Callable[..., float]
BadFields = Callable[[grpc.aio.AioRpcError], list[str]]


async def test_a_user_gets_exactly_the_limit_then_over_limit_with_a_real_reset(
    decide: Decide, metric: Metric
) -> None:
    ok_before = metric("rate_limit_decisions_total", domain="api", result="ok")
    over_before = metric("rate_limit_decisions_total", domain="api", result="over_limit")
    remaining = []
    for _ in range(5):
        reply = await decide("api", ("user", "alice"))
        assert reply.overall_code == pb.CODE_OK
        remaining.append(reply.statuses[0].limit_remaining)
    assert remaining == [4, 3, 2, 1, 0]
    reply = await decide("api", ("user", "alice"))
    assert reply.overall_code == pb.CODE_OVER_LIMIT
    [status] = reply.statuses
    assert status.code == pb.CODE_OVER_LIMIT
    assert (status.current_limit.name, status.current_limit.requests_per_unit) == ("per_user", 5)
    assert status.current_limit.unit == pb.UNIT_SECOND
    reset = status.duration_until_reset.ToTimedelta().total_seconds()
    assert 0 < reset <= 1.0
    # Another user is counted apart.
    assert (await decide("api", ("user", "bob"))).overall_code == pb.CODE_OK
    assert metric("rate_limit_decisions_total", domain="api", result="ok") == ok_before + 6
    assert (
        metric("rate_limit_decisions_total", domain="api", result="over_limit") == over_before + 1
    )
    # The reported reset is when a slot really frees.
    await asyncio.sleep(reset)
    assert (await decide("api", ("user", "alice"))).overall_code == pb.CODE_OK


async def test_near_limit_is_counted_once_the_remaining_share_is_small(
    decide: Decide, metric: Metric
) -> None:
    before = metric("rate_limit_near_limit_total", domain="api")
    for _ in range(4):  # 5 per second; 4 hits are not above 80% of 5
        await decide("api", ("user", "carol"))
    assert metric("rate_limit_near_limit_total", domain="api") == before
    await decide("api", ("user", "carol"))
    await decide("api", ("user", "carol"))  # over the limit: not "near"
    assert metric("rate_limit_near_limit_total", domain="api") == before + 1


async def test_the_admin_tier_has_its_own_limit_and_unknown_tiers_fall_back(decide: Decide) -> None:
    admin = [await decide("api", ("user", "root"), tier="admin") for _ in range(11)]
    assert [r.overall_code for r in admin].count(pb.CODE_OK) == 10
    assert admin[0].statuses[0].current_limit.requests_per_unit == 10
    gold = [await decide("api", ("user", "goldie"), tier="gold") for _ in range(6)]
    assert [r.overall_code for r in gold].count(pb.CODE_OK) == 5


async def test_an_unlimited_rule_and_an_unmatched_descriptor_never_limit(decide: Decide) -> None:
    for _ in range(12):
        reply = await decide("api", ("remote_address", "10.0.0.1"), ("tenant", "x"))
        assert reply.overall_code == pb.CODE_OK
        assert not any(s.HasField("current_limit") for s in reply.statuses)
    other = [await decide("api", ("remote_address", "10.0.0.2")) for _ in range(9)]
    assert [r.overall_code for r in other].count(pb.CODE_OK) == 8


async def test_shadow_mode_reports_over_limit_but_admits(decide: Decide, metric: Metric) -> None:
    before = metric("rate_limit_decisions_total", domain="api", result="shadow_over_limit")
    replies = [await decide("api", ("path", "/authors")) for _ in range(4)]
    assert all(r.overall_code == pb.CODE_OK for r in replies)
    assert [r.statuses[0].code for r in replies] == [pb.CODE_OK] * 2 + [pb.CODE_OVER_LIMIT] * 2
    assert all(r.statuses[0].shadow_mode for r in replies)
    after = metric("rate_limit_decisions_total", domain="api", result="shadow_over_limit")
    assert after == before + 2


async def test_descriptors_of_one_request_are_decided_together(decide: Decide) -> None:
    # per_user allows 5, per_ip 8: once the user is out, the IP is not charged either.
    for _ in range(5):
        await decide("api", ("user", "dave"), ("remote_address", "10.1.1.1"))
    reply = await decide("api", ("user", "dave"), ("remote_address", "10.1.1.1"))
    assert reply.overall_code == pb.CODE_OVER_LIMIT
    assert [s.code for s in reply.statuses] == [pb.CODE_OVER_LIMIT, pb.CODE_OK]
    assert reply.statuses[1].limit_remaining == 3


async def test_parallel_callers_are_never_admitted_beyond_the_limit(stub: Stub) -> None:
    # A per-minute override, so that a slow machine cannot let the window slide meanwhile.
    descriptor = pb.RateLimitDescriptor(
        entries=[pb.RateLimitDescriptor.Entry(key="user", value="eve")],
        limit=pb.RateLimitDescriptor.Override(requests_per_unit=20, unit=pb.UNIT_MINUTE),
    )
    request = pb.RateLimitRequest(domain="api", descriptors=[descriptor])
    replies = await asyncio.gather(*(stub.ShouldRateLimit(request, timeout=10) for _ in range(150)))
    assert [r.overall_code for r in replies].count(pb.CODE_OK) == 20
    assert replies[0].statuses[0].current_limit.requests_per_unit == 20


def _bad(
    key: str = "user",
    hits: int = 0,
    override: pb.RateLimitDescriptor.Override | None = None,
    descriptors: int = 1,
) -> pb.RateLimitRequest:
    descriptor = pb.RateLimitDescriptor(
        entries=[pb.RateLimitDescriptor.Entry(key=key, value="x")], limit=override
    )
    return pb.RateLimitRequest(
        domain="api", hits_addend=hits, descriptors=[descriptor] * descriptors
    )


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.RateLimitRequest(domain="", descriptors=[]), "domain"),
        (_bad(descriptors=0), "descriptors"),
        (_bad(descriptors=17), "descriptors"),
        (_bad(descriptors=2), "descriptors[1]"),
        (_bad(hits=1_000_000), "hits_addend"),
        (_bad(key=""), "descriptors[0].entries[0].key"),
        (_bad(key="k" * 300), "descriptors[0].entries[0].key"),
        (
            _bad(override=pb.RateLimitDescriptor.Override(requests_per_unit=5, unit=42)),  # type: ignore[arg-type]
            "descriptors[0].limit.unit",
        ),
        (
            _bad(override=pb.RateLimitDescriptor.Override(requests_per_unit=5)),
            "descriptors[0].limit.unit",
        ),
        (
            _bad(override=pb.RateLimitDescriptor.Override(unit=pb.UNIT_SECOND)),
            "descriptors[0].limit.requests_per_unit",
        ),
        (
            _bad(
                override=pb.RateLimitDescriptor.Override(
                    requests_per_unit=4_000_000_000, unit=pb.UNIT_SECOND
                )
            ),
            "descriptors[0].limit.requests_per_unit",
        ),
    ],
)
async def test_bad_requests_are_invalid_arguments_naming_the_field(
    stub: Stub,
    metric: Metric,
    bad_fields: BadFields,
    until: Callable[..., Awaitable[None]],
    request_: pb.RateLimitRequest,
    field: str,
) -> None:
    handled = {
        "grpc_service": SERVICE,
        "grpc_method": "ShouldRateLimit",
        "grpc_code": "INVALID_ARGUMENT",
    }
    before = metric("grpc_server_handled_total", **handled)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ShouldRateLimit(request_, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in bad_fields(raised.value)
    # The server counts the call once its status is sent, which the client may see first.
    await until(lambda: metric("grpc_server_handled_total", **handled) >= before + 1, within=5)
    assert metric("grpc_server_handled_total", **handled) == before + 1
