"""Rate-limit decisions and quota grants: requests checked against the rules and decided
by the store.

Transport-free: the servicer turns protobuf into these types and back. Redis failures
follow the fail mode: open admits (or grants everything) and counts it, closed raises
`Unavailable`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog

from gatehouse_kit.errors import InvalidArgument, Unavailable
from gatehouse_ratelimit.metrics import (
    BACKEND_ERRORS,
    DECISIONS,
    FAIL_OPEN,
    NEAR_LIMIT,
    QUOTA_HITS,
    QUOTA_REQUESTS,
)
from gatehouse_ratelimit.rules import DEFAULT_TIER, Limit, RateLimitRules
from gatehouse_ratelimit.store import (
    BackendError,
    QuotaCheck,
    QuotaState,
    RedisStore,
    WindowCheck,
    WindowState,
    joined_key,
)

log = structlog.get_logger(__name__)

FailMode = Literal["open", "closed"]

MAX_HITS = 1000
MAX_DESCRIPTORS = 16
MAX_ENTRIES = 8
MAX_TEXT = 256
# A descriptor whose hits in the window exceed this share of its limit is near the limit.
NEAR_LIMIT_RATIO = 0.8
# A quota grant takes at most 1/GRANT_SHARE of the room left in a window (at least one
# hit), so that replicas asking together near the limit each get a part of it.
GRANT_SHARE = 8
# A quota lease lasts at most this share of its window (and at most the configured lease).
LEASE_WINDOW_SHARE = 10


class RulesSource(Protocol):
    """Anything holding the current rules (a `RulesFile`), read once per request."""

    @property
    def rules(self) -> RateLimitRules:
        """The rules in force now."""
        ...


@dataclass(frozen=True)
class Descriptor:
    """(key, value) entries, and optionally a limit that replaces the rules' one."""

    entries: tuple[tuple[str, str], ...]
    override: Limit | None = None


@dataclass(frozen=True)
class DescriptorStatus:
    """The outcome for one descriptor; `limit` is None when no rule limits it."""

    over: bool
    limit: Limit | None = None
    name: str = ""
    remaining: int = 0
    reset_seconds: float = 0.0
    shadow: bool = False


@dataclass(frozen=True)
class Decision:
    """The overall outcome and the status of each descriptor, in request order."""

    over: bool
    statuses: list[DescriptorStatus]
    fail_open: bool = False


@dataclass(frozen=True)
class Demand:
    """Quota wanted for one descriptor, and unspent hits of an earlier grant given back."""

    descriptor: Descriptor
    hits: int
    reservation: str = ""
    returned: int = 0


@dataclass(frozen=True)
class Quota:
    """What one demand got: `granted` hits to spend within `lease_seconds`, named by
    `reservation` for giving back; `status` as a decision would report it."""

    granted: int
    status: DescriptorStatus
    lease_seconds: float
    reservation: str = ""


@dataclass(frozen=True)
class QuotaOutcome:
    """The quota of each demand, in request order."""

    quotas: list[Quota]
    fail_open: bool = False


@dataclass(frozen=True, slots=True)
class _Plan:
    """How the rules treat one descriptor: the limit (None: not limited) and its window."""

    name: str
    limit: Limit | None
    shadow: bool
    check: WindowCheck | None


def check_text(violations: list[tuple[str, str]], field: str, value: str) -> None:
    """Note a violation when `value` is empty or longer than MAX_TEXT characters."""
    if not value:
        violations.append((field, "must not be empty"))
    elif len(value) > MAX_TEXT:
        violations.append((field, f"must be at most {MAX_TEXT} characters"))


def backend_failed(fail_mode: FailMode, error: BackendError, what: str) -> None:
    """Count a Redis failure, then raise Unavailable when failing closed."""
    BACKEND_ERRORS.inc()
    log.warning("rate limit backend failed", what=what, error=str(error), fail_mode=fail_mode)
    if fail_mode == "closed":
        raise Unavailable("rate limit backend unavailable") from error
    FAIL_OPEN.inc()


def _check_descriptors(
    violations: list[tuple[str, str]], field: str, descriptors: Sequence[tuple[str, Descriptor]]
) -> None:
    """Note what is wrong with (where, descriptor) pairs; `field` names the list."""
    if not 1 <= len(descriptors) <= MAX_DESCRIPTORS:
        violations.append((field, f"must hold 1 to {MAX_DESCRIPTORS} descriptors"))
    seen: set[tuple[tuple[str, str], ...]] = set()
    for where, descriptor in descriptors:
        if not 1 <= len(descriptor.entries) <= MAX_ENTRIES:
            violations.append((f"{where}.entries", f"must hold 1 to {MAX_ENTRIES} entries"))
        for j, (key, value) in enumerate(descriptor.entries):
            check_text(violations, f"{where}.entries[{j}].key", key)
            if len(value) > MAX_TEXT:
                violations.append(
                    (f"{where}.entries[{j}].value", f"must be at most {MAX_TEXT} characters")
                )
        if descriptor.entries in seen:
            violations.append((where, "repeats an earlier descriptor"))
        seen.add(descriptor.entries)


def _validate(domain: str, descriptors: Sequence[Descriptor], hits: int) -> None:
    violations: list[tuple[str, str]] = []
    check_text(violations, "domain", domain)
    if not 1 <= hits <= MAX_HITS:
        violations.append(("hits_addend", f"must be between 1 and {MAX_HITS}"))
    _check_descriptors(
        violations, "descriptors", [(f"descriptors[{i}]", d) for i, d in enumerate(descriptors)]
    )
    if violations:
        raise InvalidArgument("invalid rate limit request", violations)


def _validate_demands(domain: str, demands: Sequence[Demand]) -> None:
    violations: list[tuple[str, str]] = []
    check_text(violations, "domain", domain)
    _check_descriptors(
        violations,
        "demands",
        [(f"demands[{i}].descriptor", d.descriptor) for i, d in enumerate(demands)],
    )
    for i, demand in enumerate(demands):
        if not 0 <= demand.hits <= MAX_HITS:
            violations.append((f"demands[{i}].hits", f"must be between 0 and {MAX_HITS}"))
        if not 0 <= demand.returned <= MAX_HITS:
            violations.append((f"demands[{i}].returned_hits", f"must be between 0 and {MAX_HITS}"))
        if len(demand.reservation) > MAX_TEXT:
            violations.append(
                (f"demands[{i}].returned_reservation", f"must be at most {MAX_TEXT} characters")
            )
        elif demand.returned and not demand.reservation:
            violations.append(
                (f"demands[{i}].returned_reservation", "must name the grant given back")
            )
    if violations:
        raise InvalidArgument("invalid quota request", violations)


def _plan(rules: RateLimitRules, domain: str, descriptor: Descriptor, tier: str) -> _Plan:
    rule = rules.match(domain, descriptor.entries)
    limit = descriptor.override or (rule.limit_for(tier or DEFAULT_TIER) if rule else None)
    shadow = rule.shadow_mode if rule else False
    check = None
    if limit is not None:
        check = WindowCheck(
            key=joined_key(domain, *(p for entry in descriptor.entries for p in entry)),
            limit=limit.requests_per_unit,
            window_us=limit.unit.seconds * 1_000_000,
            shadow=shadow,
        )
    return _Plan(rule.label if rule else "override", limit, shadow, check)


class RateLimiter:
    """Decides requests, and grants quota, of a domain's descriptors with the
    sliding-window store. Quota leases last at most `lease_seconds`."""

    def __init__(
        self,
        store: RedisStore,
        rules: RulesSource,
        fail_mode: FailMode,
        lease_seconds: float = 1.0,
    ) -> None:
        self._store = store
        self._rules = rules
        self.fail_mode = fail_mode
        self.lease_seconds = lease_seconds

    async def decide(
        self,
        domain: str,
        descriptors: Sequence[Descriptor],
        hits: int = 1,
        tier: str = DEFAULT_TIER,
        now_us: int | None = None,
    ) -> Decision:
        """Admit `hits` for all descriptors at once, or for none (over limit)."""
        _validate(domain, descriptors, hits)
        rules = self._rules.rules
        label = domain if rules.knows(domain) else "other"
        plans = [_plan(rules, domain, descriptor, tier) for descriptor in descriptors]
        checks = [p.check for p in plans if p.check is not None]
        plan = [(p.name, p.limit, p.shadow) for p in plans]
        if not checks:
            DECISIONS.labels(label, "ok").inc()
            return Decision(over=False, statuses=[DescriptorStatus(over=False) for _ in plan])
        try:
            admitted, states = await self._store.check_windows(checks, hits, now_us)
        except BackendError as error:
            if self.fail_mode == "closed":
                DECISIONS.labels(label, "unavailable").inc()
            else:
                DECISIONS.labels(label, "fail_open").inc()
            backend_failed(self.fail_mode, error, f"decision in {domain}")
            return Decision(
                over=False, statuses=[DescriptorStatus(over=False) for _ in plan], fail_open=True
            )
        return self._outcome(label, plan, admitted, iter(states))

    @staticmethod
    def _outcome(
        label: str,
        plan: list[tuple[str, Limit | None, bool]],
        admitted: bool,
        states: Iterator[WindowState],
    ) -> Decision:
        statuses: list[DescriptorStatus] = []
        near = shadow_over = False
        for name, limit, shadow in plan:
            if limit is None:
                statuses.append(DescriptorStatus(over=False, name=name))
                continue
            state = next(states)
            remaining = max(0, limit.requests_per_unit - state.used)
            statuses.append(
                DescriptorStatus(
                    over=state.over,
                    limit=limit,
                    name=name,
                    remaining=remaining,
                    reset_seconds=state.reset_us / 1_000_000,
                    shadow=shadow,
                )
            )
            shadow_over |= shadow and state.over
            near |= admitted and state.used > int(NEAR_LIMIT_RATIO * limit.requests_per_unit)
        if not admitted:
            result = "over_limit"
        elif shadow_over:
            result = "shadow_over_limit"
        else:
            result = "ok"
        DECISIONS.labels(label, result).inc()
        if near:
            NEAR_LIMIT.labels(label).inc()
        return Decision(over=not admitted, statuses=statuses)

    async def grant(
        self,
        domain: str,
        demands: Sequence[Demand],
        tier: str = DEFAULT_TIER,
        now_us: int | None = None,
    ) -> QuotaOutcome:
        """Take back what each demand returns, then grant it hits on its own: a shadow or
        unlimited descriptor everything wanted, any other what fits (GRANT_SHARE)."""
        rules = self._rules.rules
        label = domain if rules.knows(domain) else "other"
        try:
            _validate_demands(domain, demands)
        except InvalidArgument:
            QUOTA_REQUESTS.labels(label, "invalid").inc()
            raise
        plans = [_plan(rules, domain, demand.descriptor, tier) for demand in demands]
        checks = [
            QuotaCheck(
                plan.check,
                demand.hits,
                self._hold_us(plan.check.window_us),
                demand.reservation,
                demand.returned,
            )
            for plan, demand in zip(plans, demands, strict=True)
            if plan.check is not None
        ]
        try:
            states = await self._store.grant_quota(checks, GRANT_SHARE, now_us) if checks else []
        except BackendError as error:
            wanted = sum(demand.hits for demand in demands)
            result = "unavailable" if self.fail_mode == "closed" else "fail_open"
            QUOTA_REQUESTS.labels(label, result).inc()
            DECISIONS.labels(label, result).inc(wanted)
            backend_failed(self.fail_mode, error, f"quota in {domain}")
            QUOTA_HITS.labels(label, "granted").inc(wanted)
            return QuotaOutcome(
                [
                    Quota(demand.hits, DescriptorStatus(over=False), self.lease_seconds)
                    for demand in demands
                ],
                fail_open=True,
            )
        QUOTA_REQUESTS.labels(label, "ok").inc()
        return QuotaOutcome(self._quotas(label, plans, demands, iter(states)))

    def _hold_us(self, window_us: int) -> int:
        return min(int(self.lease_seconds * 1_000_000), window_us // LEASE_WINDOW_SHARE)

    def _quotas(
        self,
        label: str,
        plans: list[_Plan],
        demands: Sequence[Demand],
        states: Iterator[QuotaState],
    ) -> list[Quota]:
        quotas: list[Quota] = []
        ok = over = shadow_over = granted = returned = 0
        near = False
        for plan, demand in zip(plans, demands, strict=True):
            if plan.limit is None or plan.check is None:
                ok += demand.hits
                granted += demand.hits
                status = DescriptorStatus(over=False, name=plan.name)
                quotas.append(Quota(demand.hits, status, self.lease_seconds))
                continue
            state = next(states)
            limit = plan.limit.requests_per_unit
            granted += state.granted
            returned += state.returned
            if plan.shadow:
                beyond = min(state.granted, max(0, state.used - limit))
                shadow_over += beyond
                ok += state.granted - beyond
            else:
                ok += state.granted
                over += demand.hits if state.over else 0
                near |= state.granted > 0 and state.used > int(NEAR_LIMIT_RATIO * limit)
            status = DescriptorStatus(
                over=state.over,
                limit=plan.limit,
                name=plan.name,
                remaining=max(0, limit - state.used),
                reset_seconds=state.reset_us / 1_000_000,
                shadow=plan.shadow,
            )
            lease = self._hold_us(plan.check.window_us) / 1_000_000
            quotas.append(Quota(state.granted, status, lease, state.reservation))
        for result, hits in (("ok", ok), ("over_limit", over), ("shadow_over_limit", shadow_over)):
            if hits:
                DECISIONS.labels(label, result).inc(hits)
        QUOTA_HITS.labels(label, "granted").inc(granted)
        QUOTA_HITS.labels(label, "returned").inc(returned)
        if near:
            NEAR_LIMIT.labels(label).inc()
        return quotas
