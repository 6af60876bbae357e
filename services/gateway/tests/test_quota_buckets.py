"""The gateway's local quota, against a scripted quota source and a clock of the test's own:
one refill per bucket at a time, demand that grows with use, refusals remembered, unspent
hits given back, and the headers of the tightest rule."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from google.protobuf.duration_pb2 import Duration
from prometheus_client import REGISTRY

from gatehouse_gateway import ratelimiting
from gatehouse_gateway.quota import QuotaUnavailable, giving_back
from gatehouse_gateway.ratelimiting import LocalQuota
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2 as pb

LEASE = 1.0
WINDOW = 60.0


def duration(seconds: float) -> Duration:
    return Duration(seconds=int(seconds), nanos=round(seconds % 1 * 1e9))


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Window:
    """One descriptor's window at the fake service: hits counted, what it allows."""

    limit: int | None
    shadow: bool = False
    used: int = 0
    reservations: dict[str, int] = field(default_factory=dict)


class Service:
    """Grants as the ratelimit service would (what fits, at most an eighth of the room),
    from windows named by descriptor value; `gate`, when set, holds every answer."""

    def __init__(self, clock: Clock, **windows: Window) -> None:
        self.clock = clock
        self.windows = windows
        self.asked: list[pb.QuotaRequest] = []
        self.sent: list[pb.QuotaRequest] = []
        self.gate: asyncio.Event | None = None
        self.fail = False
        self.fail_open = False
        self._grants = 0

    async def ask(self, request: pb.QuotaRequest, deadline: float) -> pb.QuotaGrant:
        self.asked.append(request)
        if self.gate is not None:
            try:
                async with asyncio.timeout(deadline):
                    await self.gate.wait()
            except TimeoutError:
                raise QuotaUnavailable("no answer") from None
        if self.fail:
            raise QuotaUnavailable("down")
        grant = pb.QuotaGrant(id=request.id, fail_open=self.fail_open)
        for demand in request.demands:
            grant.quotas.append(self._grant(demand))
        return grant

    def send(self, request: pb.QuotaRequest) -> None:
        self.sent.append(request)
        for demand in request.demands:
            self._grant(demand)

    def _grant(self, demand: pb.QuotaDemand) -> pb.DescriptorQuota:
        window = self.windows[demand.descriptor.entries[0].value]
        back = window.reservations.pop(demand.returned_reservation, 0)
        window.used -= min(back, demand.returned_hits)
        if self.fail_open or window.limit is None:
            return pb.DescriptorQuota(granted_hits=demand.hits, lease_duration=duration(LEASE))
        room = max(0, window.limit - window.used)
        granted = demand.hits if window.shadow else min(demand.hits, room, max(1, room // 8))
        window.used += granted
        self._grants += 1
        reservation = f"r{self._grants}" if granted else ""
        if granted:
            window.reservations[reservation] = granted
        return pb.DescriptorQuota(
            granted_hits=granted,
            current_limit=pb.RateLimit(
                name=f"per_{demand.descriptor.entries[0].key}",
                requests_per_unit=window.limit,
                unit=pb.UNIT_MINUTE,
            ),
            limit_remaining=max(0, window.limit - window.used),
            duration_until_reset=duration(WINDOW if granted else 7.5),
            shadow_mode=window.shadow,
            lease_duration=duration(LEASE),
            reservation=reservation,
        )

    def wanted(self) -> list[list[int]]:
        return [[d.hits for d in r.demands] for r in self.asked]


USER = (("user", "u"),)


def buckets() -> float:
    return REGISTRY.get_sample_value("gateway_rate_limit_quota_buckets") or 0.0


def quota(service: Service, deadline: float = 1.0, max_chunk: int = 100) -> LocalQuota:
    return LocalQuota(service, deadline, max_chunk=max_chunk, clock=service.clock)


async def test_demand_doubles_with_use_and_one_refill_serves_many_requests() -> None:
    service = Service(Clock(), u=Window(limit=1000))
    local = quota(service, max_chunk=16)
    decisions = [await local.decide("http", "default", USER) for _ in range(40)]
    assert all(d.allowed for d in decisions)
    # 1, then twice what the last grant served, within the chunk of 16.
    assert service.wanted() == [[1], [2], [4], [8], [16], [16]]
    assert service.windows["u"].used == 47
    assert decisions[-1].headers()["X-RateLimit-Remaining"] == str(1000 - 40)


async def test_concurrent_requests_share_one_refill_per_bucket_and_ask_for_themselves() -> None:
    service = Service(Clock(), u=Window(limit=1000))
    service.gate = asyncio.Event()
    local = quota(service)
    pending = [asyncio.create_task(local.decide("http", "default", USER)) for _ in range(20)]
    await asyncio.sleep(0.01)
    assert len(service.asked) == 1
    service.gate.set()
    decisions = await asyncio.gather(*pending)
    assert all(d.allowed for d in decisions)
    # The refill asked for as many hits as requests were waiting when it went out.
    assert service.wanted() == [[20]]


async def test_a_refill_of_nothing_refuses_and_the_refusal_is_remembered() -> None:
    clock = Clock()
    service = Service(clock, u=Window(limit=3))
    local = quota(service)
    assert [(await local.decide("http", "default", USER)).allowed for _ in range(3)] == [True] * 3
    asked = len(service.asked)
    refused = await local.decide("http", "default", USER)
    assert not refused.allowed
    assert refused.headers() == {
        "RateLimit-Policy": '"per_user";q=3;w=60',
        "RateLimit": '"per_user";r=0;t=8',
        "X-RateLimit-Limit": "3",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "8",
        "Retry-After": "8",
    }
    assert refused.error().status == 429
    # A flood meanwhile is refused here, without asking the service again...
    for _ in range(50):
        assert not (await local.decide("http", "default", USER)).allowed
    assert len(service.asked) == asked + 1
    # ...until a lease's time has passed (the reset, 7.5 s, is further away).
    clock.now += LEASE
    service.windows["u"].used = 0
    assert (await local.decide("http", "default", USER)).allowed
    assert len(service.asked) == asked + 2


async def test_unspent_hits_of_an_ended_lease_go_back_with_the_next_refill() -> None:
    clock = Clock()
    service = Service(clock, u=Window(limit=1000))
    local = quota(service)
    for _ in range(4):  # grants of 1 and 2, then one of 4 with 3 unspent
        await local.decide("http", "default", USER)
    assert service.windows["u"].used == 7
    clock.now += LEASE
    await local.decide("http", "default", USER)
    last = service.asked[-1].demands[0]
    assert (last.returned_reservation, last.returned_hits) == ("r3", 3)
    assert service.windows["u"].used == 4 + last.hits


async def test_a_lease_runs_from_when_it_was_asked_for() -> None:
    clock = Clock()
    service = Service(clock, u=Window(limit=1000))
    local = quota(service)
    await local.decide("http", "default", USER)  # a grant of 1, spent
    service.gate = asyncio.Event()
    second = asyncio.create_task(local.decide("http", "default", USER))
    await asyncio.sleep(0.01)
    clock.now += 0.4  # the grant of 2 asked for now comes 0.4 s later
    service.gate.set()
    assert (await second).allowed
    # Its lease ends a second after it was asked for, not after it came: the hit left is
    # given back and the next request asks again.
    clock.now += LEASE - 0.4 + 0.001
    await local.decide("http", "default", USER)
    assert len(service.asked) == 3
    assert service.asked[-1].demands[0].returned_hits == 1


async def test_the_sweep_gives_back_after_the_lease_and_forgets_idle_buckets() -> None:
    clock = Clock()
    service = Service(clock, u=Window(limit=1000), v=Window(limit=1000))
    local = quota(service)
    for _ in range(4):
        await local.decide("http", "default", USER)
    await local.decide("http", "admin", (("user", "v"),))
    local.sweep()
    assert not service.sent
    clock.now += LEASE
    local.sweep()
    [back] = service.sent
    assert [(d.descriptor.entries[0].value, d.returned_hits) for d in back.demands] == [("u", 3)]
    assert service.windows["u"].used == 4
    assert buckets() == 2
    clock.now += 1.0
    local.sweep()
    assert buckets() == 0


async def test_closing_gives_back_every_unspent_hit() -> None:
    service = Service(Clock(), u=Window(limit=1000), v=Window(limit=1000))
    local = quota(service)
    await local.start()
    for _ in range(4):
        await local.decide("http", "default", (("user", "u"), ("user", "v")))
    await local.close()
    [back] = service.sent
    assert sorted(d.returned_hits for d in back.demands) == [3, 3]
    assert service.windows["u"].used == service.windows["v"].used == 4


async def test_headers_report_the_enforced_rule_with_the_least_left() -> None:
    service = Service(
        Clock(), u=Window(limit=100), ip=Window(limit=600), path=Window(limit=5, shadow=True)
    )
    local = quota(service)
    descriptors = (("user", "u"), ("remote_address", "ip"), ("path", "path"))
    service.windows["u"].used = 90
    decision = await local.decide("http", "default", descriptors)
    assert decision.allowed
    # The user has 10 left (the grant of 1 is spent); the shadow rule never reports. The
    # draft's fields name every enforced rule, the tightest first; the legacy headers are
    # the tightest's.
    assert decision.headers() == {
        "RateLimit-Policy": '"per_user";q=100;w=60, "per_remote_address";q=600;w=60',
        "RateLimit": '"per_user";r=9;t=60, "per_remote_address";r=599;t=60',
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "9",
        "X-RateLimit-Reset": "60",
    }


async def test_a_refused_descriptor_takes_nothing_from_the_others() -> None:
    service = Service(Clock(), u=Window(limit=1000), ip=Window(limit=2))
    local = quota(service)
    both = (("user", "u"), ("remote_address", "ip"))
    decisions = [(await local.decide("http", "default", both)).allowed for _ in range(3)]
    assert decisions == [True, True, False]
    asked = [[d.descriptor.entries[0].value for d in r.demands] for r in service.asked]
    # The third request found a hit of the user's held and only the address to refill.
    assert asked == [["u", "ip"], ["u", "ip"], ["ip"]]
    await local.close()
    # The refused request spent nothing: giving back leaves the two admitted requests.
    assert service.windows["u"].used == 2


async def test_shadow_and_unlimited_descriptors_never_refuse() -> None:
    service = Service(Clock(), path=Window(limit=1, shadow=True), free=Window(limit=None))
    local = quota(service)
    descriptors = (("path", "path"), ("tenant", "free"))
    decisions = [await local.decide("http", "default", descriptors) for _ in range(10)]
    assert all(d.allowed and not d.headers() for d in decisions)
    await local.close()
    # The shadow rule counted every request; the unlimited one was asked once.
    assert service.windows["path"].used == 10
    assert (
        sum(1 for r in service.asked for d in r.demands if d.descriptor.entries[0].key == "tenant")
        == 1
    )


async def test_a_fail_open_grant_admits_without_headers_for_its_lease() -> None:
    clock = Clock()
    service = Service(clock, u=Window(limit=1))
    service.fail_open = True
    local = quota(service)
    decisions = [await local.decide("http", "default", USER) for _ in range(5)]
    assert all(d.allowed and not d.headers() for d in decisions)
    assert len(service.asked) == 1


async def test_no_grant_raises_quota_unavailable() -> None:
    service = Service(Clock(), u=Window(limit=10))
    service.fail = True
    with pytest.raises(QuotaUnavailable):
        await quota(service).decide("http", "default", USER)
    slow = Service(Clock(), u=Window(limit=10))
    slow.gate = asyncio.Event()
    with pytest.raises(QuotaUnavailable):
        await quota(slow, deadline=0.05).decide("http", "default", USER)


def test_a_grant_nobody_waited_for_is_given_back_whole() -> None:
    def descriptor(value: str) -> pb.RateLimitDescriptor:
        return pb.RateLimitDescriptor(
            entries=[pb.RateLimitDescriptor.Entry(key="user", value=value)]
        )

    request = pb.QuotaRequest(
        id=7,
        domain="http",
        tier="admin",
        demands=[pb.QuotaDemand(descriptor=descriptor(v), hits=4) for v in ("a", "b", "c")],
    )
    grant = pb.QuotaGrant(
        id=7,
        quotas=[
            pb.DescriptorQuota(granted_hits=4, reservation="r1"),
            pb.DescriptorQuota(granted_hits=0),
            pb.DescriptorQuota(granted_hits=4),  # unlimited: nothing counted to give back
        ],
    )
    back = giving_back(request, grant)
    assert back is not None
    assert (back.domain, back.tier) == ("http", "admin")
    assert [
        (d.descriptor.entries[0].value, d.hits, d.returned_reservation, d.returned_hits)
        for d in back.demands
    ] == [("a", 0, "r1", 4)]
    assert giving_back(request, pb.QuotaGrant(id=7, quotas=[pb.DescriptorQuota()] * 3)) is None


@pytest.mark.parametrize(
    ("name", "unit", "member"),
    [
        ("http_per_user", pb.UNIT_MINUTE, '"http_per_user";q=7;w=60'),
        ("per_second", pb.UNIT_SECOND, '"per_second";q=7;w=1'),
        ("daily", pb.UNIT_DAY, '"daily";q=7;w=86400'),
        ("unknown unit", pb.UNIT_UNSPECIFIED, '"unknown unit";q=7'),
        # A name is a structured-field String: quotes and backslashes escaped, and
        # nothing but printable ASCII.
        ('a"b\\c', pb.UNIT_HOUR, '"a\\"b\\\\c";q=7;w=3600'),
        ("caf\u00e9\n", pb.UNIT_HOUR, '"caf??";q=7;w=3600'),
    ],
)
def test_a_rules_policy_is_written_as_the_draft_defines_it(
    name: str, unit: int, member: str
) -> None:
    assert ratelimiting._policy(name, 7, unit) == member
