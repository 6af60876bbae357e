"""Connection leases: at most N live leases per holder key (e.g. sockets per user).

A lease lives for the TTL unless renewed, so the leases of a holder that died without
releasing them expire by themselves. Renewing keeps a live lease alive; a lease that
has already expired is not revived (the holder may acquire again).
"""

from __future__ import annotations

from dataclasses import dataclass

from gatehouse_kit.errors import InvalidArgument
from gatehouse_ratelimit.limiter import FailMode, RulesSource, backend_failed, check_text
from gatehouse_ratelimit.metrics import LEASES
from gatehouse_ratelimit.rules import DEFAULT_TIER
from gatehouse_ratelimit.store import BackendError, LeaseOp, RedisStore, joined_key


@dataclass(frozen=True)
class LeaseDecision:
    """`limit` is the holder's allowance (0 when the call does not know the tier)."""

    granted: bool
    limit: int
    active: int
    ttl_seconds: float
    fail_open: bool = False


class ConnectionLeases:
    """Acquire, renew and release leases in the rules' lease domains."""

    def __init__(
        self, store: RedisStore, rules: RulesSource, fail_mode: FailMode, ttl_seconds: float
    ) -> None:
        self._store = store
        self._rules = rules
        self.fail_mode = fail_mode
        self.ttl_seconds = ttl_seconds

    async def acquire(
        self,
        domain: str,
        key: str,
        lease_id: str,
        tier: str = DEFAULT_TIER,
        now_us: int | None = None,
    ) -> LeaseDecision:
        """Grant `lease_id` when the holder has fewer live leases than its tier allows."""
        _validate(domain, key, lease_id)
        rule = self._rules.rules.lease_rule(domain)
        if rule is None:
            raise InvalidArgument(
                "no lease rule for this domain", [("domain", f"no lease rule for {domain!r}")]
            )
        limit = rule.limit_for(tier or DEFAULT_TIER)
        return await self._call("acquire", domain, key, lease_id, limit, now_us)

    async def renew(
        self, domain: str, key: str, lease_id: str, now_us: int | None = None
    ) -> LeaseDecision:
        """Extend a live lease by the TTL; not granted when it has already expired."""
        _validate(domain, key, lease_id)
        return await self._call("renew", domain, key, lease_id, 0, now_us)

    async def release(
        self, domain: str, key: str, lease_id: str, now_us: int | None = None
    ) -> LeaseDecision:
        """Drop a lease (releasing an unknown or expired one is not an error)."""
        _validate(domain, key, lease_id)
        return await self._call("release", domain, key, lease_id, 0, now_us)

    async def _call(
        self, op: LeaseOp, domain: str, key: str, lease_id: str, limit: int, now_us: int | None
    ) -> LeaseDecision:
        label = domain if self._rules.rules.lease_rule(domain) else "other"
        try:
            state = await self._store.lease(
                op,
                joined_key(domain, key),
                lease_id,
                limit=limit,
                ttl_us=int(self.ttl_seconds * 1_000_000),
                now_us=now_us,
            )
        except BackendError as error:
            failed = "unavailable" if self.fail_mode == "closed" else "fail_open"
            LEASES.labels(label, op, failed).inc()
            backend_failed(self.fail_mode, error, f"lease {op} in {domain}")
            return LeaseDecision(True, limit, 0, self.ttl_seconds, fail_open=True)
        result = "released" if op == "release" else "granted" if state.granted else "denied"
        LEASES.labels(label, op, result).inc()
        return LeaseDecision(state.granted, limit, state.active, self.ttl_seconds)


def _validate(domain: str, key: str, lease_id: str) -> None:
    violations: list[tuple[str, str]] = []
    check_text(violations, "domain", domain)
    check_text(violations, "key", key)
    check_text(violations, "lease_id", lease_id)
    if violations:
        raise InvalidArgument("invalid lease request", violations)
