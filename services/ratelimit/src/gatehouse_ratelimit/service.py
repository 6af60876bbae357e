"""The gRPC servicer: protobuf in and out, decisions delegated to the limiter and leases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from google.protobuf.duration_pb2 import Duration

from gatehouse_kit.errors import InvalidArgument, ServiceError
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2 as pb
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2_grpc
from gatehouse_ratelimit.leases import ConnectionLeases, LeaseDecision
from gatehouse_ratelimit.limiter import Demand, Descriptor, DescriptorStatus, RateLimiter
from gatehouse_ratelimit.metrics import QUOTA_STREAMS
from gatehouse_ratelimit.rules import MAX_REQUESTS_PER_UNIT, Limit, Unit

if TYPE_CHECKING:
    Context = Any

SERVICE_NAME = "gatehouse.ratelimit.v1.RateLimitService"
# Quota requests of one stream decided at the same time; the stream reads no further
# request until one of them is answered.
QUOTA_IN_FLIGHT = 64

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


def _descriptor(
    where: str, descriptor: pb.RateLimitDescriptor, violations: list[tuple[str, str]]
) -> Descriptor:
    override: Limit | None = None
    if descriptor.HasField("limit"):
        unit = _UNITS.get(descriptor.limit.unit)
        if unit is None:
            violations.append((f"{where}.limit.unit", "unknown unit"))
        elif not 1 <= descriptor.limit.requests_per_unit <= MAX_REQUESTS_PER_UNIT:
            violations.append(
                (
                    f"{where}.limit.requests_per_unit",
                    f"must be between 1 and {MAX_REQUESTS_PER_UNIT}",
                )
            )
        else:
            override = Limit(requests_per_unit=descriptor.limit.requests_per_unit, unit=unit)
    return Descriptor(tuple((e.key, e.value) for e in descriptor.entries), override)


def _descriptors(request: pb.RateLimitRequest) -> list[Descriptor]:
    violations: list[tuple[str, str]] = []
    found = [
        _descriptor(f"descriptors[{i}]", d, violations) for i, d in enumerate(request.descriptors)
    ]
    if violations:
        raise InvalidArgument("invalid rate limit request", violations)
    return found


def _demands(request: pb.QuotaRequest) -> list[Demand]:
    violations: list[tuple[str, str]] = []
    found = [
        Demand(
            _descriptor(f"demands[{i}].descriptor", d.descriptor, violations),
            d.hits,
            d.returned_reservation,
            d.returned_hits,
        )
        for i, d in enumerate(request.demands)
    ]
    if violations:
        raise InvalidArgument("invalid quota request", violations)
    return found


def _current_limit(status: DescriptorStatus) -> pb.RateLimit | None:
    if status.limit is None:
        return None
    return pb.RateLimit(
        name=status.name,
        requests_per_unit=status.limit.requests_per_unit,
        unit=_PROTO_UNITS[status.limit.unit],
    )


def _refusal(request_id: int, error: ServiceError) -> pb.QuotaGrant:
    """A grant answering `error`: its code, and its message with any field violations."""
    violations = error.violations if isinstance(error, InvalidArgument) else []
    message = "; ".join([error.message, *(f"{f}: {why}" for f, why in violations)])
    return pb.QuotaGrant(id=request_id, code=error.code.value[0], message=message)


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
        statuses = [
            pb.DescriptorStatus(
                code=pb.CODE_OVER_LIMIT if status.over else pb.CODE_OK,
                current_limit=_current_limit(status),
                limit_remaining=status.remaining,
                duration_until_reset=_duration(status.reset_seconds),
                shadow_mode=status.shadow,
            )
            for status in decision.statuses
        ]
        return pb.RateLimitResponse(
            overall_code=pb.CODE_OVER_LIMIT if decision.over else pb.CODE_OK,
            statuses=statuses,
            fail_open=decision.fail_open,
        )

    async def LeaseQuota(
        self, request_iterator: AsyncIterator[pb.QuotaRequest], context: Context
    ) -> AsyncIterator[pb.QuotaGrant]:
        """Answer each QuotaRequest with its QuotaGrant, up to QUOTA_IN_FLIGHT at a time,
        in the order they are decided; ends when the caller is done writing."""
        answers: asyncio.Queue[pb.QuotaGrant | Exception | None] = asyncio.Queue()
        slots = asyncio.Semaphore(QUOTA_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(request: pb.QuotaRequest) -> None:
            try:
                answers.put_nowait(await self._grant(request))
            except Exception as error:
                answers.put_nowait(error)
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(answer(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.wait(set(tasks))
            except Exception as error:
                answers.put_nowait(error)
            finally:
                answers.put_nowait(None)

        QUOTA_STREAMS.inc()
        reader = asyncio.create_task(read())
        try:
            # The caller learns at once that the stream is up.
            await context.send_initial_metadata(())
            while (item := await answers.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            reader.cancel()
            for task in tasks:
                task.cancel()
            QUOTA_STREAMS.dec()

    async def _grant(self, request: pb.QuotaRequest) -> pb.QuotaGrant:
        try:
            outcome = await self._limiter.grant(request.domain, _demands(request), request.tier)
        except ServiceError as error:
            return _refusal(request.id, error)
        return pb.QuotaGrant(
            id=request.id,
            fail_open=outcome.fail_open,
            quotas=[
                pb.DescriptorQuota(
                    granted_hits=quota.granted,
                    current_limit=_current_limit(quota.status),
                    limit_remaining=quota.status.remaining,
                    duration_until_reset=_duration(quota.status.reset_seconds),
                    shadow_mode=quota.status.shadow,
                    lease_duration=_duration(quota.lease_seconds),
                    reservation=quota.reservation,
                )
                for quota in outcome.quotas
            ],
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
