"""The gRPC servicer: protobuf in and out, decisions delegated to the limiter and leases."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf.duration_pb2 import Duration

from gatehouse_kit.errors import InvalidArgument
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2 as pb
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2_grpc
from gatehouse_ratelimit.leases import ConnectionLeases, LeaseDecision
from gatehouse_ratelimit.limiter import Descriptor, RateLimiter
from gatehouse_ratelimit.rules import Limit, Unit

if TYPE_CHECKING:
    Context = Any

SERVICE_NAME = "gatehouse.ratelimit.v1.RateLimitService"

_UNITS = {
    pb.UNIT_SECOND: Unit.SECOND,
    pb.UNIT_MINUTE: Unit.MINUTE,
    pb.UNIT_HOUR: Unit.HOUR,
    pb.UNIT_DAY: Unit.DAY,
}
_PROTO_UNITS = {unit: proto for proto, unit in _UNITS.items()}


def _duration(seconds: float) -> Duration:
    micros = max(0, round(seconds * 1_000_000))
    return Duration(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def _descriptors(request: pb.RateLimitRequest) -> list[Descriptor]:
    found: list[Descriptor] = []
    violations: list[tuple[str, str]] = []
    for i, descriptor in enumerate(request.descriptors):
        override: Limit | None = None
        if descriptor.HasField("limit"):
            unit = _UNITS.get(descriptor.limit.unit)
            if unit is None:
                violations.append((f"descriptors[{i}].limit.unit", "unknown unit"))
            elif descriptor.limit.requests_per_unit < 1:
                violations.append((f"descriptors[{i}].limit.requests_per_unit", "must be >= 1"))
            else:
                override = Limit(requests_per_unit=descriptor.limit.requests_per_unit, unit=unit)
        entries = tuple((e.key, e.value) for e in descriptor.entries)
        found.append(Descriptor(entries, override))
    if violations:
        raise InvalidArgument("invalid rate limit request", violations)
    return found


def _lease_response(decision: LeaseDecision) -> pb.LeaseResponse:
    return pb.LeaseResponse(
        granted=decision.granted,
        limit=decision.limit,
        active=decision.active,
        ttl=_duration(decision.ttl_seconds),
        fail_open=decision.fail_open,
    )


class RateLimitServicer(ratelimit_pb2_grpc.RateLimitServiceServicer):
    """gatehouse.ratelimit.v1.RateLimitService over a limiter and connection leases."""

    def __init__(self, limiter: RateLimiter, leases: ConnectionLeases) -> None:
        self._limiter = limiter
        self._leases = leases

    async def ShouldRateLimit(
        self, request: pb.RateLimitRequest, context: Context
    ) -> pb.RateLimitResponse:
        """Decide the request's descriptors together (see docs/ratelimit.md)."""
        decision = await self._limiter.decide(
            request.domain, _descriptors(request), request.hits_addend or 1, request.tier
        )
        statuses = []
        for status in decision.statuses:
            reply = pb.DescriptorStatus(
                code=pb.CODE_OVER_LIMIT if status.over else pb.CODE_OK,
                limit_remaining=status.remaining,
                duration_until_reset=_duration(status.reset_seconds),
                shadow_mode=status.shadow,
            )
            if status.limit is not None:
                reply.current_limit.CopyFrom(
                    pb.RateLimit(
                        name=status.name,
                        requests_per_unit=status.limit.requests_per_unit,
                        unit=_PROTO_UNITS[status.limit.unit],
                    )
                )
            statuses.append(reply)
        return pb.RateLimitResponse(
            overall_code=pb.CODE_OVER_LIMIT if decision.over else pb.CODE_OK,
            statuses=statuses,
            fail_open=decision.fail_open,
        )

    async def AcquireLease(
        self, request: pb.AcquireLeaseRequest, context: Context
    ) -> pb.LeaseResponse:
        """Take a connection lease when the holder has room under its tier's limit."""
        decision = await self._leases.acquire(
            request.domain, request.key, request.lease_id, request.tier
        )
        return _lease_response(decision)

    async def RenewLease(self, request: pb.RenewLeaseRequest, context: Context) -> pb.LeaseResponse:
        """Extend a live lease by the TTL."""
        decision = await self._leases.renew(request.domain, request.key, request.lease_id)
        return _lease_response(decision)

    async def ReleaseLease(
        self, request: pb.ReleaseLeaseRequest, context: Context
    ) -> pb.ReleaseLeaseResponse:
        """Drop a lease; unknown leases are fine."""
        await self._leases.release(request.domain, request.key, request.lease_id)
        return pb.ReleaseLeaseResponse()
