"""Rate-limit decisions: requests checked against the rules and decided by the store.

Transport-free: the servicer turns protobuf into these types and back. Redis failures
follow the fail mode: open admits and counts it, closed raises `Unavailable`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog

from gatehouse_kit.errors import InvalidArgument, Unavailable
from gatehouse_ratelimit.metrics import BACKEND_ERRORS, DECISIONS, FAIL_OPEN, NEAR_LIMIT
from gatehouse_ratelimit.rules import DEFAULT_TIER, Limit, RateLimitRules
from gatehouse_ratelimit.store import (
    BackendError,
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


def _validate(domain: str, descriptors: Sequence[Descriptor], hits: int) -> None:
    violations: list[tuple[str, str]] = []
    check_text(violations, "domain", domain)
    if not 1 <= hits <= MAX_HITS:
        violations.append(("hits_addend", f"must be between 1 and {MAX_HITS}"))
    if not 1 <= len(descriptors) <= MAX_DESCRIPTORS:
        violations.append(("descriptors", f"must hold 1 to {MAX_DESCRIPTORS} descriptors"))
    seen: set[tuple[tuple[str, str], ...]] = set()
    for i, descriptor in enumerate(descriptors):
        where = f"descriptors[{i}]"
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
    if violations:
        raise InvalidArgument("invalid rate limit request", violations)


class RateLimiter:
    """Decides requests of a domain's descriptors with the sliding-window store."""

    def __init__(self, store: RedisStore, rules: RulesSource, fail_mode: FailMode) -> None:
        self._store = store
        self._rules = rules
        self.fail_mode = fail_mode

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
        checks: list[WindowCheck] = []
        plan: list[tuple[str, Limit | None, bool]] = []
        for descriptor in descriptors:
            rule = rules.match(domain, descriptor.entries)
            limit = descriptor.override or (rule.limit_for(tier or DEFAULT_TIER) if rule else None)
            shadow = rule.shadow_mode if rule else False
            name = rule.label if rule else "override"
            plan.append((name, limit, shadow))
            if limit is not None:
                checks.append(
                    WindowCheck(
                        key=joined_key(domain, *(p for entry in descriptor.entries for p in entry)),
                        limit=limit.requests_per_unit,
                        window_us=limit.unit.seconds * 1_000_000,
                        shadow=shadow,
                    )
                )
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
