"""The gateway's side of rate limiting: asking the ratelimit service, and what to tell clients.

Domains and descriptors sent (the service's rules give the limits):
- `http`: `[("user", sub)]` and `[("remote_address", ip)]` for every API request
  (only the address one when the token was refused);
- `ws_messages`: `[("user", sub)]` for every WebSocket message;
- `ws_connections` leases keyed by `sub` for concurrent sockets.
The tier is `admin` for administrators, else `default`.

When the ratelimit service cannot be reached, the gateway's fail mode decides: open
lets the request through, closed refuses it with 503; both are counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import Counter

from gatehouse_gateway.errors import ApiError, ErrorCode
from gatehouse_gateway.upstreams import Upstream
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc

RATE_LIMIT_UNREACHABLE = Counter(
    "gateway_rate_limit_unreachable_total",
    "Decisions the gateway took itself because the ratelimit service could not be "
    "reached, by the gateway's fail mode (open: allowed, closed: refused).",
    ["fail_mode"],
)

HTTP_DOMAIN = "http"
WS_MESSAGES_DOMAIN = "ws_messages"
WS_CONNECTIONS_DOMAIN = "ws_connections"


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The verdict on one request, with what the client may know about its quota.

    `limit`, `remaining` and `reset_seconds` describe the tightest matching rule; they
    are None when no rule applies or the decision was taken without the service.
    """

    allowed: bool
    limit: int | None = None
    remaining: int | None = None
    reset_seconds: float | None = None

    def headers(self) -> dict[str, str]:
        """`X-RateLimit-*` headers (and `Retry-After` when refused)."""
        if self.limit is None:
            return {}
        reset = math.ceil(self.reset_seconds or 0)
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining or 0),
            "X-RateLimit-Reset": str(reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(reset, 1))
        return headers

    def error(self) -> ApiError:
        """The 429 a refused request answers."""
        return ApiError(
            429,
            ErrorCode.RATE_LIMIT_EXCEEDED,
            "rate limit exceeded",
            details={"retry_after": max(math.ceil(self.reset_seconds or 0), 1)},
            headers=self.headers(),
        )


@dataclass(frozen=True, slots=True)
class LeaseDecision:
    """Whether a socket may open (granted), and how long its lease lives unrenewed."""

    granted: bool
    limit: int
    active: int
    ttl_seconds: float


_UNLIMITED = RateDecision(allowed=True)


def _descriptor(key: str, value: str) -> ratelimit_pb2.RateLimitDescriptor:
    return ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)]
    )


def _decision(response: ratelimit_pb2.RateLimitResponse) -> RateDecision:
    allowed = response.overall_code != ratelimit_pb2.CODE_OVER_LIMIT
    # Report the rule that binds: a refusing one if refused, else the least remaining.
    candidates = [
        s
        for s in response.statuses
        if s.HasField("current_limit")
        and not s.shadow_mode
        and (allowed or s.code == ratelimit_pb2.CODE_OVER_LIMIT)
    ]
    if not candidates:
        return RateDecision(allowed=allowed)
    tightest = min(
        candidates, key=lambda s: (s.limit_remaining, -s.duration_until_reset.ToTimedelta())
    )
    return RateDecision(
        allowed=allowed,
        limit=tightest.current_limit.requests_per_unit,
        remaining=tightest.limit_remaining,
        reset_seconds=tightest.duration_until_reset.ToTimedelta().total_seconds(),
    )


class RateLimiter:
    """Client of the ratelimit service with the gateway's fail mode."""

    def __init__(self, upstream: Upstream, fail_open: bool) -> None:
        self._upstream = upstream
        # Every decision counts a hit, so it is never retried: the write channel.
        self._stub = upstream.stub(ratelimit_pb2_grpc.RateLimitServiceStub, writes=True)
        self.fail_open = fail_open

    def _unreachable(self, error: ApiError) -> RateDecision:
        RATE_LIMIT_UNREACHABLE.labels("open" if self.fail_open else "closed").inc()
        if self.fail_open:
            return _UNLIMITED
        raise error

    async def _ask(self, domain: str, tier: str, *descriptors: tuple[str, str]) -> RateDecision:
        request = ratelimit_pb2.RateLimitRequest(
            domain=domain, descriptors=[_descriptor(k, v) for k, v in descriptors], tier=tier
        )
        try:
            response = await self._upstream.call(self._stub.ShouldRateLimit, request)
        except ApiError as error:
            if error.status in (503, 504):
                return self._unreachable(error)
            raise
        return _decision(response)

    async def check_http(self, user_id: str | None, ip: str, tier: str) -> RateDecision:
        """The verdict on one HTTP request from `ip` (by `user_id`, when authenticated)."""
        if user_id is None:
            return await self._ask(HTTP_DOMAIN, tier, ("remote_address", ip))
        return await self._ask(HTTP_DOMAIN, tier, ("user", user_id), ("remote_address", ip))

    async def check_ws_message(self, user_id: str, tier: str) -> RateDecision:
        """The verdict on one WebSocket message of `user_id`."""
        return await self._ask(WS_MESSAGES_DOMAIN, tier, ("user", user_id))

    async def acquire_connection(self, user_id: str, lease_id: str, tier: str) -> LeaseDecision:
        """Ask for a socket slot of `user_id`; `lease_id` is unique per socket."""
        request = ratelimit_pb2.AcquireLeaseRequest(
            domain=WS_CONNECTIONS_DOMAIN, key=user_id, lease_id=lease_id, tier=tier
        )
        return await self._lease(self._stub.AcquireLease, request)

    async def renew_connection(self, user_id: str, lease_id: str) -> LeaseDecision:
        """Keep the socket's slot; not granted means the lease was lost."""
        request = ratelimit_pb2.RenewLeaseRequest(
            domain=WS_CONNECTIONS_DOMAIN, key=user_id, lease_id=lease_id
        )
        return await self._lease(self._stub.RenewLease, request)

    async def release_connection(self, user_id: str, lease_id: str) -> None:
        """Free the socket's slot (best effort: an unreleased lease expires on its own)."""
        request = ratelimit_pb2.ReleaseLeaseRequest(
            domain=WS_CONNECTIONS_DOMAIN, key=user_id, lease_id=lease_id
        )
        try:
            await self._upstream.call(self._stub.ReleaseLease, request)
        except ApiError as error:
            if error.status not in (503, 504):
                raise

    async def _lease(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[Any, ratelimit_pb2.LeaseResponse],
        request: ratelimit_pb2.AcquireLeaseRequest | ratelimit_pb2.RenewLeaseRequest,
    ) -> LeaseDecision:
        try:
            response = await self._upstream.call(rpc, request)
        except ApiError as error:
            if error.status not in (503, 504):
                raise
            self._unreachable(error)
            return LeaseDecision(granted=True, limit=0, active=0, ttl_seconds=60.0)
        return LeaseDecision(
            granted=response.granted,
            limit=response.limit,
            active=response.active,
            ttl_seconds=response.ttl.ToTimedelta().total_seconds(),
        )
