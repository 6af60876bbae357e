"""The gateway's side of rate limiting: local decisions from quota leased from the
ratelimit service, socket leases, and what to tell clients.

Domains and descriptors (the service's rules give the limits):
- `http`: `[("user", sub)]` and `[("remote_address", ip)]` for every API request
  (only the address one when the token was refused);
- `ws_messages`: `[("user", sub)]` for every WebSocket message;
- `ws_connections` leases keyed by `sub` for concurrent sockets (unary calls).
The tier is `admin` for administrators, else `default`.

Decisions (docs/ratelimit.md, Quota): each (domain, tier, descriptor) has a bucket of
hits granted over the process's one LeaseQuota stream (`gatehouse_gateway.quota`). A
request takes one hit from the bucket of each of its descriptors, or from none when one
of them is over its limit. A bucket that is empty or whose lease ended is refilled by
one request at a time (concurrent requests wait for it); a refill that grants nothing
refuses with 429, and the refusal is remembered until a slot frees or the lease would
have ended. Hits left unspent when a lease ends are given back.

When the ratelimit service cannot be reached (the stream is down, or no grant comes
within GATEWAY_RATELIMIT_DEADLINE_SECONDS), the gateway's fail mode decides: open lets
the request through, closed refuses it with 503; both are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.duration_pb2 import Duration
from prometheus_client import Counter, Gauge, Histogram

from gatehouse_gateway.errors import ApiError, ErrorCode, service_unavailable
from gatehouse_gateway.quota import QuotaStream, QuotaUnavailable
from gatehouse_gateway.upstreams import Upstream
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc

RATE_LIMIT_UNREACHABLE = Counter(
    "gateway_rate_limit_unreachable_total",
    "Decisions the gateway took itself because the ratelimit service could not be "
    "reached, by the gateway's fail mode (open: allowed, closed: refused).",
    ["fail_mode"],
)
RATE_LIMIT_DECISIONS = Counter(
    "gateway_rate_limit_decisions_total",
    "Rate-limit decisions taken by the gateway, by domain and result: ok, over_limit, "
    "fail_open or unavailable (the ratelimit service could not be reached, by fail mode).",
    ["domain", "result"],
)
QUOTA_REFILLS = Counter(
    "gateway_rate_limit_refills_total",
    "Quota refills asked of the ratelimit service, by domain and result: granted, "
    "refused (a limited descriptor got nothing), fail_open (granted without Redis) or "
    "unavailable (no grant).",
    ["domain", "result"],
)
QUOTA_BUCKETS = Gauge(
    "gateway_rate_limit_quota_buckets",
    "Descriptors this process holds quota for, or remembers (as of the last sweep).",
)
QUOTA_REFILL_SECONDS = Histogram(
    "gateway_rate_limit_refill_duration_seconds",
    "Time from asking for quota to its grant.",
    ["domain"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)

HTTP_DOMAIN = "http"
WS_MESSAGES_DOMAIN = "ws_messages"
WS_CONNECTIONS_DOMAIN = "ws_connections"

# The most hits one refill asks for; the service grants at most an eighth of the room
# left in the window, so near the limit grants are smaller still.
MAX_CHUNK = 100
# Demands of one request at most (the service takes up to 16 descriptors).
_MAX_DEMANDS = 16
# How often buckets whose lease ended give back their unspent hits.
_SWEEP_SECONDS = 0.5
# A bucket is forgotten this long after its lease ended (it keeps its demand meanwhile).
_KEEP_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RuleQuota:
    """Where one enforced rule stands for a request, as the headers tell it: `policy` is
    its `RateLimit-Policy` member and `name` its identifier (both structured-field text,
    made once per grant), `limit` its quota, `remaining` and `reset_seconds` what is left
    of it and when its window next frees a slot."""

    policy: str
    name: str
    limit: int
    remaining: int
    reset_seconds: float


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The verdict on one request, with what the client may know about its quota.

    `rules` are the enforced rules the request counted against (refused: those that
    refused it), the tightest first: the one with the least left, or, refused, the one
    that frees a slot last. Empty when no rule applies or the decision was taken without
    the service.
    """

    allowed: bool
    rules: tuple[RuleQuota, ...] = ()

    def headers(self) -> dict[str, str]:
        """The headers of docs/api.md (Rate limits): `RateLimit-Policy` and `RateLimit`
        (draft-ietf-httpapi-ratelimit-headers) of every rule, `X-RateLimit-*` of the
        tightest (the replaced application's headers, kept for its clients), and
        `Retry-After` when refused."""
        if not self.rules:
            return {}
        tightest = self.rules[0]
        reset = math.ceil(tightest.reset_seconds)
        headers = {
            "RateLimit-Policy": ", ".join(r.policy for r in self.rules),
            "RateLimit": ", ".join(
                f"{r.name};r={r.remaining};t={math.ceil(r.reset_seconds)}" for r in self.rules
            ),
            "X-RateLimit-Limit": str(tightest.limit),
            "X-RateLimit-Remaining": str(tightest.remaining),
            "X-RateLimit-Reset": str(reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(reset, 1))
        return headers

    def error(self) -> ApiError:
        """The 429 a refused request answers; its headers are `headers()`, which the
        edge adds to the answer of every request that has a decision."""
        reset = self.rules[0].reset_seconds if self.rules else 0.0
        return ApiError(
            429,
            ErrorCode.RATE_LIMIT_EXCEEDED,
            "rate limit exceeded",
            details={"retry_after": max(math.ceil(reset), 1)},
        )


_WINDOW_SECONDS: dict[int, int] = {
    ratelimit_pb2.UNIT_SECOND: 1,
    ratelimit_pb2.UNIT_MINUTE: 60,
    ratelimit_pb2.UNIT_HOUR: 3600,
    ratelimit_pb2.UNIT_DAY: 86400,
}


@functools.cache
def _sf_string(text: str) -> str:
    """`text` as a structured-field String (RFC 9651): printable ASCII in quotes, with
    `\\` and `"` escaped; any other character becomes `?`."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in text)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.cache
def _policy(name: str, limit: int, unit: int) -> str:
    """The `RateLimit-Policy` member of a rule: its name, quota `q` and window `w` in
    seconds (omitted for a unit this gateway does not know)."""
    window = _WINDOW_SECONDS.get(unit)
    member = f"{_sf_string(name)};q={limit}"
    return member if window is None else f"{member};w={window}"


@dataclass(frozen=True, slots=True)
class LeaseDecision:
    """Whether a socket may open (granted), and how long its lease lives unrenewed."""

    granted: bool
    limit: int
    active: int
    ttl_seconds: float


_UNLIMITED = RateDecision(allowed=True)


@functools.cache
def _decided(domain: str, result: str) -> Any:
    """The decisions counter of (domain, result): looked up once, counted per request."""
    return RATE_LIMIT_DECISIONS.labels(domain, result)


def _seconds(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


class _Bucket:
    """The quota this process holds for one (domain, tier, descriptor).

    Tokens may be spent until `expires`; `limit` is None when no rule limits the
    descriptor (or the grant came without Redis), and then nothing is counted here.
    `remaining` and `reset_at` are the service's figures at the grant, `policy` and
    `name` the rule's in the headers' syntax.
    """

    __slots__ = (
        "descriptor",
        "expires",
        "limit",
        "name",
        "policy",
        "refill",
        "refused_until",
        "remaining",
        "reservation",
        "reset_at",
        "shadow",
        "taken",
        "tokens",
        "waiting",
    )

    def __init__(self, descriptor: ratelimit_pb2.RateLimitDescriptor) -> None:
        self.descriptor = descriptor
        self.expires = 0.0
        self.limit: int | None = None
        self.policy = self.name = ""
        self.remaining = 0
        self.reset_at = 0.0
        self.refused_until = 0.0
        self.shadow = False
        self.tokens = 0
        self.taken = 0
        self.reservation = ""
        self.waiting = 0
        self.refill: asyncio.Future[QuotaUnavailable | None] | None = None

    def ready(self, now: float) -> bool:
        """Whether a request may take a hit now without asking the service."""
        return now < self.expires and (self.limit is None or self.tokens > 0)

    def take(self) -> None:
        if self.limit is not None:
            self.tokens -= 1
            self.taken += 1

    def give_back(self) -> ratelimit_pb2.QuotaDemand | None:
        """A demand returning the unspent hits of the current grant (None if there are
        none); they are no longer held here."""
        if not (self.tokens and self.reservation):
            return None
        demand = ratelimit_pb2.QuotaDemand(
            descriptor=self.descriptor,
            returned_reservation=self.reservation,
            returned_hits=self.tokens,
        )
        self.tokens, self.reservation = 0, ""
        return demand

    def demand(self, max_chunk: int) -> ratelimit_pb2.QuotaDemand:
        """What to ask for: as many hits as requests wait, or twice what the last grant
        served, within `max_chunk`; with the unspent hits of an ended lease given back."""
        hits = min(max_chunk, max(1, self.waiting, 2 * self.taken))
        demand = self.give_back() or ratelimit_pb2.QuotaDemand(descriptor=self.descriptor)
        demand.hits = hits
        return demand

    def grant(
        self, quota: ratelimit_pb2.DescriptorQuota, fail_open: bool, sent: float, received: float
    ) -> None:
        """Hold `quota`, asked for at `sent` and granted at `received` (monotonic): its
        lease runs from `sent`, so it ends no later than the service counts it."""
        lease = _seconds(quota.lease_duration)
        self.expires = sent + lease
        self.taken = 0
        if fail_open or not quota.HasField("current_limit"):
            self.limit, self.shadow, self.tokens, self.reservation = None, False, 0, ""
            return
        rule = quota.current_limit
        self.limit = rule.requests_per_unit
        self.policy = _policy(rule.name, rule.requests_per_unit, rule.unit)
        self.name = _sf_string(rule.name)
        self.shadow = quota.shadow_mode
        self.remaining = quota.limit_remaining
        self.reset_at = received + _seconds(quota.duration_until_reset)
        self.tokens = quota.granted_hits
        self.reservation = quota.reservation
        if not self.tokens and not self.shadow:
            # Over the limit: refuse here until a slot frees, or a lease's time at most.
            self.refused_until = min(self.reset_at, received + lease)


def _rule(bucket: _Bucket, remaining: int, now: float) -> RuleQuota:
    assert bucket.limit is not None
    return RuleQuota(
        policy=bucket.policy,
        name=bucket.name,
        limit=bucket.limit,
        remaining=remaining,
        reset_seconds=max(0.0, bucket.reset_at - now),
    )


def _admitted(buckets: Sequence[_Bucket], now: float) -> RateDecision:
    """The headers of an admitted request: its enforced rules, the one with the least
    left first."""
    limited = [b for b in buckets if b.limit is not None and not b.shadow]
    if not limited:
        return _UNLIMITED
    limited.sort(key=lambda b: (b.remaining + b.tokens, -b.reset_at))
    return RateDecision(
        allowed=True, rules=tuple(_rule(b, b.remaining + b.tokens, now) for b in limited)
    )


def _refused(buckets: Sequence[_Bucket], now: float) -> RateDecision:
    """The 429 of a request: its refusing rules, the one that frees a slot last first."""
    ordered = sorted(buckets, key=lambda b: b.reset_at, reverse=True)
    return RateDecision(
        allowed=False, rules=tuple(_rule(b, 0, now) for b in ordered if b.limit is not None)
    )


class QuotaSource(Protocol):
    """Where grants come from: a `QuotaStream`."""

    async def ask(
        self,
        request: ratelimit_pb2.QuotaRequest,
        deadline: float,
    ) -> ratelimit_pb2.QuotaGrant:
        """The grant of `request` within `deadline` seconds, else QuotaUnavailable."""
        ...

    def send(self, request: ratelimit_pb2.QuotaRequest) -> None:
        """Send `request` without waiting for its grant."""
        ...


class LocalQuota:
    """Decides requests from the quota held in buckets, refilled from `source`.

    A request that cannot be decided within `deadline` seconds raises QuotaUnavailable.
    `clock` is monotonic seconds (tests give their own).
    """

    def __init__(
        self,
        source: QuotaSource,
        deadline: float,
        *,
        max_chunk: int = MAX_CHUNK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._deadline = deadline
        self._max_chunk = max_chunk
        self._clock = clock
        self._buckets: dict[tuple[str, str, str, str], _Bucket] = {}
        self._refills: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start giving back what ended leases left unspent."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="quota-sweeper")

    async def close(self) -> None:
        """Stop, and give back every unspent hit held."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for task in list(self._refills):
            task.cancel()
        self.sweep(everything=True)

    async def decide(
        self, domain: str, tier: str, descriptors: Sequence[tuple[str, str]]
    ) -> RateDecision:
        """Take one hit for each descriptor, or refuse when one is over its limit."""
        buckets = [self._bucket(domain, tier, key, value) for key, value in descriptors]
        give_up = self._clock() + self._deadline
        while True:
            now = self._clock()
            refused = [b for b in buckets if b.refused_until > now]
            if refused:
                _decided(domain, "over_limit").inc()
                return _refused(refused, now)
            empty = [b for b in buckets if not b.ready(now)]
            if not empty:
                for bucket in buckets:
                    bucket.take()
                _decided(domain, "ok").inc()
                return _admitted(buckets, now)
            if now >= give_up:
                raise QuotaUnavailable("no quota within the deadline")
            await self._refill(domain, tier, empty, give_up - now)

    def _bucket(self, domain: str, tier: str, key: str, value: str) -> _Bucket:
        name = (domain, tier, key, value)
        bucket = self._buckets.get(name)
        if bucket is None:
            entry = ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)
            bucket = self._buckets[name] = _Bucket(
                ratelimit_pb2.RateLimitDescriptor(entries=[entry])
            )
        return bucket

    async def _refill(self, domain: str, tier: str, buckets: list[_Bucket], budget: float) -> None:
        """Wait for `buckets` to be refilled: one refill in flight per bucket, shared by
        every request waiting for it."""
        asking = [b for b in buckets if b.refill is None]
        if asking:
            future: asyncio.Future[QuotaUnavailable | None] = (
                asyncio.get_running_loop().create_future()
            )
            for bucket in asking:
                bucket.refill = future
            task = asyncio.create_task(self._ask(domain, tier, asking, future))
            self._refills.add(task)
            task.add_done_callback(self._refills.discard)
        refills = {b.refill for b in buckets if b.refill is not None}
        for bucket in buckets:
            bucket.waiting += 1
        try:
            async with asyncio.timeout(budget):
                outcomes = await asyncio.gather(*(asyncio.shield(f) for f in refills))
        except TimeoutError:
            raise QuotaUnavailable("no quota within the deadline") from None
        finally:
            for bucket in buckets:
                bucket.waiting -= 1
        for outcome in outcomes:
            if outcome is not None:
                raise outcome

    async def _ask(
        self,
        domain: str,
        tier: str,
        buckets: list[_Bucket],
        future: asyncio.Future[QuotaUnavailable | None],
    ) -> None:
        outcome: QuotaUnavailable | None = None
        try:
            sent = self._clock()
            request = ratelimit_pb2.QuotaRequest(
                domain=domain, tier=tier, demands=[b.demand(self._max_chunk) for b in buckets]
            )
            grant = await self._source.ask(request, self._deadline)
            if grant.code or len(grant.quotas) != len(buckets):
                raise QuotaUnavailable(f"quota refused ({grant.code}): {grant.message}")
            received = self._clock()
            for bucket, quota in zip(buckets, grant.quotas, strict=True):
                bucket.grant(quota, grant.fail_open, sent, received)
            QUOTA_REFILL_SECONDS.labels(domain).observe(received - sent)
            if grant.fail_open:
                result = "fail_open"
            elif any(b.refused_until > received for b in buckets):
                result = "refused"
            else:
                result = "granted"
            QUOTA_REFILLS.labels(domain, result).inc()
        except QuotaUnavailable as error:
            QUOTA_REFILLS.labels(domain, "unavailable").inc()
            outcome = error
        finally:
            for bucket in buckets:
                bucket.refill = None
            future.set_result(outcome)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            self.sweep()

    def sweep(self, *, everything: bool = False) -> None:
        """Give back the unspent hits of leases that ended (of all, when `everything`),
        and forget the buckets nobody used for a while."""
        now = self._clock()
        back: dict[tuple[str, str], list[ratelimit_pb2.QuotaDemand]] = {}
        for name, bucket in list(self._buckets.items()):
            if bucket.refill is not None or bucket.waiting:
                continue
            if everything or now >= bucket.expires:
                demand = bucket.give_back()
                if demand is not None:
                    back.setdefault(name[:2], []).append(demand)
            if everything or (
                now >= bucket.expires + _KEEP_SECONDS and now >= bucket.refused_until
            ):
                del self._buckets[name]
        QUOTA_BUCKETS.set(len(self._buckets))
        for (domain, tier), demands in back.items():
            for i in range(0, len(demands), _MAX_DEMANDS):
                self._source.send(
                    ratelimit_pb2.QuotaRequest(
                        domain=domain, tier=tier, demands=demands[i : i + _MAX_DEMANDS]
                    )
                )


class RateLimiter:
    """The gateway's rate limits: local decisions from quota leased over one stream,
    socket leases by unary calls, the gateway's fail mode around both."""

    def __init__(self, upstream: Upstream, fail_open: bool) -> None:
        self._upstream = upstream
        # Lease calls change state, so they are never retried: the write channel.
        self._stub = upstream.stub(ratelimit_pb2_grpc.RateLimitServiceStub, writes=True)
        self.fail_open = fail_open
        self._stream = QuotaStream(upstream.write_channel, patience=upstream.deadline)
        self._quota = LocalQuota(self._stream, upstream.deadline)

    async def start(self) -> None:
        """Open the quota stream and start giving back unspent hits."""
        await self._stream.start()
        await self._quota.start()

    async def close(self) -> None:
        """Give back what is held and end the quota stream."""
        await self._quota.close()
        await self._stream.close()

    def _unreachable(self, error: ApiError) -> RateDecision:
        RATE_LIMIT_UNREACHABLE.labels("open" if self.fail_open else "closed").inc()
        if self.fail_open:
            return _UNLIMITED
        raise error

    async def _decide(self, domain: str, tier: str, *descriptors: tuple[str, str]) -> RateDecision:
        try:
            return await self._quota.decide(domain, tier, descriptors)
        except QuotaUnavailable:
            result = "fail_open" if self.fail_open else "unavailable"
            _decided(domain, result).inc()
            return self._unreachable(service_unavailable(self._upstream.name))

    async def check_http(self, user_id: str | None, ip: str, tier: str) -> RateDecision:
        """The verdict on one HTTP request from `ip` (by `user_id`, when authenticated)."""
        if user_id is None:
            return await self._decide(HTTP_DOMAIN, tier, ("remote_address", ip))
        return await self._decide(HTTP_DOMAIN, tier, ("user", user_id), ("remote_address", ip))

    async def check_ws_message(self, user_id: str, tier: str) -> RateDecision:
        """The verdict on one WebSocket message of `user_id`."""
        return await self._decide(WS_MESSAGES_DOMAIN, tier, ("user", user_id))

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
