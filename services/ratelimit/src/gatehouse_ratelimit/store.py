"""Rate-limit state in Redis: the sliding-window and lease Lua scripts, one round trip each.

Every call is bounded by a short timeout and never retried here: a slow or absent Redis
surfaces at once as `BackendError`, and the limiter applies the configured fail mode.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import count
from typing import Any, Literal
from urllib.parse import quote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError


def lua_source(name: str) -> str:
    """The text of one of the package's Lua scripts (`sliding_window` or `leases`)."""
    return (resources.files("gatehouse_ratelimit") / "lua" / f"{name}.lua").read_text()


SLIDING_WINDOW_LUA = lua_source("sliding_window")
LEASES_LUA = lua_source("leases")


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
class LeaseState:
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
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
        )
        self._client: Redis = Redis.from_pool(pool)
        # Script objects run EVALSHA and load the script again on NOSCRIPT.
        self._window = self._client.register_script(SLIDING_WINDOW_LUA)
        self._leases = self._client.register_script(LEASES_LUA)
        # Members of a window log must be unique across replicas and calls.
        self._token_prefix = uuid.uuid4().hex[:12]
        self._calls = count()

    async def load_scripts(self) -> None:
        """Load both scripts now, so that the first decision needs one round trip."""
        await self._run(self._client.script_load(SLIDING_WINDOW_LUA))
        await self._run(self._client.script_load(LEASES_LUA))

    async def close(self) -> None:
        await self._client.aclose()

    async def _run(self, awaitable: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await awaitable
        except (RedisError, TimeoutError, OSError) as error:
            raise BackendError(f"{type(error).__name__}: {error}") from error

    async def check_windows(
        self, checks: Sequence[WindowCheck], hits: int, now_us: int | None = None
    ) -> tuple[bool, list[WindowState]]:
        """Decide `hits` against every check in one script call; (admitted, states)."""
        keys: list[str] = []
        args: list[str | int] = [
            "" if now_us is None else now_us,
            f"{self._token_prefix}{next(self._calls)}",
            hits,
        ]
        for check in checks:
            base = f"{self.key_prefix}window:{check.key}"
            keys += [f"{base}:log", f"{base}:sum"]
            args += [check.limit, check.window_us, "1" if check.shadow else "0"]
        reply = await self._run(self._window(keys=keys, args=args))
        states = [
            WindowState(used=int(reply[i]), reset_us=int(reply[i + 1]), over=bool(reply[i + 2]))
            for i in range(1, len(reply), 3)
        ]
        return bool(reply[0]), states

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
        reply = await self._run(self._leases(keys=[f"{self.key_prefix}lease:{key}"], args=args))
        return LeaseState(granted=bool(reply[0]), active=int(reply[1]))
