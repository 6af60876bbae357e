"""Connection leases through gRPC: a per-tier cap, release, renewal, and expiry of the
leases of a holder that died without releasing them (lease TTL 1 s in these tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
import pytest

from gatehouse_protos.ratelimit.v1 import ratelimit_pb2 as pb

if TYPE_CHECKING:
    from gatehouse_protos.ratelimit.v1.ratelimit_pb2_grpc import (
        RateLimitServiceAsyncStub as Stub,
    )

Decide = Callable[..., Awaitable[pb.RateLimitResponse]]
Metric = Callable[..., float]
BadFields = Callable[[grpc.aio.AioRpcError], list[str]]


async def acquire(stub: Stub, key: str, lease_id: str, tier: str = "") -> pb.LeaseResponse:
    return await stub.AcquireLease(
        pb.AcquireLeaseRequest(domain="sockets", key=key, lease_id=lease_id, tier=tier), timeout=5
    )


async def renew(stub: Stub, key: str, lease_id: str) -> pb.LeaseResponse:
    return await stub.RenewLease(
        pb.RenewLeaseRequest(domain="sockets", key=key, lease_id=lease_id), timeout=5
    )


async def test_leases_are_capped_per_holder_and_freed_by_release(
    stub: Stub, metric: Metric
) -> None:
    denied = {"domain": "sockets", "op": "acquire", "result": "denied"}
    denied_before = metric("rate_limit_leases_total", **denied)
    first, second = await acquire(stub, "ann", "c1"), await acquire(stub, "ann", "c2")
    assert (first.granted, second.granted, second.active, second.limit) == (True, True, 2, 2)
    assert second.ttl.ToTimedelta().total_seconds() == 1.0
    third = await acquire(stub, "ann", "c3")
    assert (third.granted, third.active) == (False, 2)
    # Acquiring a lease already held is idempotent; other holders are counted apart.
    assert (await acquire(stub, "ann", "c1")).granted
    assert (await acquire(stub, "ben", "c1")).granted
    await stub.ReleaseLease(
        pb.ReleaseLeaseRequest(domain="sockets", key="ann", lease_id="c1"), timeout=5
    )
    assert (await acquire(stub, "ann", "c3")).granted
    assert metric("rate_limit_leases_total", **denied) == denied_before + 1


async def test_the_admin_tier_holds_more_leases(stub: Stub) -> None:
    granted = [(await acquire(stub, "root", f"c{i}", tier="admin")).granted for i in range(5)]
    assert granted == [True] * 4 + [False]


async def test_leases_of_a_killed_holder_expire_while_renewed_ones_stay(stub: Stub) -> None:
    # "dead" holds two leases and never renews them; "alive" renews its own.
    assert (await acquire(stub, "dead", "d1")).granted
    assert (await acquire(stub, "dead", "d2")).granted
    assert (await acquire(stub, "alive", "a1")).granted
    assert not (await acquire(stub, "dead", "d3")).granted
    for _ in range(3):
        await asyncio.sleep(0.5)
        renewed = await renew(stub, "alive", "a1")
        assert (renewed.granted, renewed.active) == (True, 1)
    # 1.5 s later the dead holder's leases are gone, without any release.
    fresh = await acquire(stub, "dead", "d3")
    assert (fresh.granted, fresh.active) == (True, 1)
    # An expired lease is not revived by renewing it.
    assert not (await renew(stub, "dead", "d1")).granted


async def test_lease_requests_need_a_lease_domain_and_ids(
    stub: Stub, bad_fields: BadFields
) -> None:
    for request, field in [
        (pb.AcquireLeaseRequest(domain="api", key="k", lease_id="l"), "domain"),
        (pb.AcquireLeaseRequest(domain="sockets", key="", lease_id="l"), "key"),
        (pb.AcquireLeaseRequest(domain="sockets", key="k", lease_id=""), "lease_id"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.AcquireLease(request, timeout=5)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert bad_fields(raised.value) == [field]
