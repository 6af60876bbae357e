"""Rate-limit state in Redis: the sliding-window (decisions and quota grants) and lease Lua
scripts, one EVALSHA each.

Every call is bounded by a short timeout and never retried here: a slow or absent Redis
surfaces at once as `BackendError`, and the limiter applies the configured fail mode.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import count
from typing import Any, Literal
from urllib.parse import quote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError


def lua_source(name: str) -> str:
    """The text of one of the package's Lua scripts (`sliding_window` or `leases`)."""
    return (resources.files("gatehouse_ratelimit") / "lua" / f"{name}.lua").read_text()


SLIDING_WINDOW_LUA = lua_source("sliding_window")
LEASES_LUA = lua_source("leases")
# EVALSHA names a script by the SHA1 of its text, as Redis computes it.
_SHAS = {
    source: hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    for source in (SLIDING_WINDOW_LUA, LEASES_LUA)
}


# Values the sliding-window script returns per descriptor.
_FIELDS = 6


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def joined_key(*parts: str) -> str:
    """Parts joined by ':' with each one quoted, so that no two part lists give one key."""
    return ":".join(quote(part, safe="") for part in parts)


class BackendError(Exception):
    """Redis failed or did not answer within the timeout."""


@dataclass(frozen=True)
class WindowCheck:
    """One counter to check: its key (unique per domain and descriptor; the store adds its
    prefix), its limit over its window, and whether it only observes (shadow)."""

    key: str
    limit: int
    window_us: int
    shadow: bool = False


@dataclass(frozen=True)
class WindowState:
    """A counter after the decision: hits in the window, time until a slot frees, over or not."""

    used: int
    reset_us: int
    over: bool


@dataclass(frozen=True)
class QuotaCheck:
    """Quota wanted from one counter: `hits` (0: none), recorded to count from `hold_us`
    after now (the end of their lease); and hits of an earlier grant to give back, named
    by its `reservation`."""

    window: WindowCheck
    hits: int
    hold_us: int
    reservation: str = ""
    returned: int = 0


@dataclass(frozen=True)
class QuotaState:
    """A counter after a grant: `granted` hits recorded under `reservation` (empty when
    none), `returned` hits given back; `over` when it had no room for one hit."""

    used: int
    reset_us: int
    over: bool
    granted: int
    reservation: str
    returned: int


@dataclass(frozen=True)
class LeaseState:
    """A lease call's outcome and the holder's live leases after it."""

    granted: bool
    active: int


LeaseOp = Literal["acquire", "renew", "release"]


class RedisStore:
    """The Redis side of rate limiting, shared by every replica of the service.

    `now_us` arguments exist for tests that need a deterministic clock; the service
    leaves them unset so that Redis's own clock decides, identical for all replicas.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        key_prefix: str = "ratelimit:",
        max_connections: int = 64,
    ) -> None:
        self._timeout = timeout_seconds
        self.key_prefix = key_prefix
        # Callers beyond max_connections wait for a free connection (within the timeout).
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_seconds,
            # Reads are bounded by the asyncio timeout around each call (one timer, not two).
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
        )
        self._client: Redis = Redis.from_pool(pool)
        # Members of a window log must be unique across replicas and calls.
        self._token_prefix = uuid.uuid4().hex[:12]
        self._calls = count()

    async def load_scripts(self) -> None:
        """Load both scripts now, so that the first decision needs one round trip."""
        for source in _SHAS:
            await self._bounded(self._client.script_load(source))

    async def close(self) -> None:
        """Close the connections to Redis."""
        await self._client.aclose()

    async def _bounded(self, call: Awaitable[Any]) -> Any:
        """`call` within the timeout, any Redis failure raised as BackendError."""
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except (RedisError, TimeoutError, OSError) as error:
            raise BackendError(f"{type(error).__name__}: {error}") from error

    async def _evalsha(self, source: str, keys: list[str], args: list[str | int]) -> Any:
        """EVALSHA; on NOSCRIPT (Redis restarted or its script cache was flushed) the
        script is loaded and run again."""
        try:
            return await self._client.evalsha(_SHAS[source], len(keys), *keys, *args)
        except NoScriptError:
            await self._client.script_load(source)
            return await self._client.evalsha(_SHAS[source], len(keys), *keys, *args)

    async def check_windows(
        self, checks: Sequence[WindowCheck], hits: int, now_us: int | None = None
    ) -> tuple[bool, list[WindowState]]:
        """Decide `hits` against every check in one script call; (admitted, states)."""
        reply = await self._windows(
            "decide", 1, [QuotaCheck(check, hits, 0) for check in checks], now_us
        )
        states = [
            WindowState(used=int(reply[i]), reset_us=int(reply[i + 1]), over=bool(reply[i + 2]))
            for i in range(1, len(reply), _FIELDS)
        ]
        return bool(reply[0]), states

    async def grant_quota(
        self, checks: Sequence[QuotaCheck], share: int, now_us: int | None = None
    ) -> list[QuotaState]:
        """Give back, then grant each check's hits on its own (at most 1/`share` of the
        room left, at least one hit while there is room), in one script call."""
        reply = await self._windows("grant", share, checks, now_us)
        return [
            QuotaState(
                used=int(reply[i]),
                reset_us=int(reply[i + 1]),
                over=bool(reply[i + 2]),
                granted=int(reply[i + 3]),
                reservation=_text(reply[i + 4]),
                returned=int(reply[i + 5]),
            )
            for i in range(1, len(reply), _FIELDS)
        ]

    async def _windows(
        self, mode: str, share: int, checks: Sequence[QuotaCheck], now_us: int | None
    ) -> Any:
        keys: list[str] = []
        args: list[str | int] = [
            "" if now_us is None else now_us,
            f"{self._token_prefix}{next(self._calls)}",
            mode,
            share,
        ]
        for check in checks:
            window = check.window
            base = f"{self.key_prefix}window:{window.key}"
            keys += [f"{base}:log", f"{base}:sum"]
            args += [
                window.limit,
                window.window_us,
                "1" if window.shadow else "0",
                check.hits,
                check.hold_us,
                check.reservation,
                check.returned,
            ]
        return await self._bounded(self._evalsha(SLIDING_WINDOW_LUA, keys, args))

    async def lease(
        self,
        op: LeaseOp,
        key: str,
        lease_id: str,
        *,
        limit: int,
        ttl_us: int,
        now_us: int | None = None,
    ) -> LeaseState:
        """Acquire, renew or release `lease_id` in the lease set `key`."""
        args = [op, "" if now_us is None else now_us, lease_id, limit, ttl_us]
        lease_key = f"{self.key_prefix}lease:{key}"
        reply = await self._bounded(self._evalsha(LEASES_LUA, [lease_key], args))
        return LeaseState(granted=bool(reply[0]), active=int(reply[1]))
