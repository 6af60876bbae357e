"""The sliding-window script's precision on real Redis, with a deterministic clock.

The store takes `now_us` so that boundaries can be hit to the microsecond; the service
itself lets Redis's clock decide.
"""

from __future__ import annotations

import asyncio
import random
import time

import redis.asyncio as redis

from gatehouse_ratelimit.store import RedisStore, WindowCheck
from tests.harness.backends import Backend
from tests.harness.private import PrivateRedis

W = 60_000_000  # one minute, in microseconds
LIMIT = 5


def start_time() -> int:
    # Real time, so that the keys' own expiry (relative to Redis's clock) stays sane.
    return int(time.time() * 1_000_000)


def check(key: str = "user", limit: int = LIMIT, shadow: bool = False) -> WindowCheck:
    return WindowCheck(key=key, limit=limit, window_us=W, shadow=shadow)


async def test_exactly_the_limit_is_admitted_and_remaining_counts_down(store: RedisStore) -> None:
    t = start_time()
    used = []
    for i in range(LIMIT):
        admitted, [state] = await store.check_windows([check()], 1, now_us=t + i)
        assert admitted
        assert not state.over
        used.append(state.used)
        # Not over the limit: the next slot frees when the oldest hit leaves the window.
        assert state.reset_us == W - i
    assert used == [1, 2, 3, 4, 5]
    admitted, [state] = await store.check_windows([check()], 1, now_us=t + LIMIT)
    assert not admitted
    assert state.over
    assert state.used == LIMIT
    assert state.reset_us == W - LIMIT


async def test_a_slot_frees_exactly_when_the_oldest_hit_leaves_the_window(
    store: RedisStore,
) -> None:
    t = start_time()
    for i in range(LIMIT):
        await store.check_windows([check()], 1, now_us=t + i * 1000)
    admitted, [state] = await store.check_windows([check()], 1, now_us=t + W - 1)
    assert not admitted
    assert state.reset_us == 1
    # At t + W the first hit (at t) has left the window: exactly one slot is free.
    admitted, [state] = await store.check_windows([check()], 1, now_us=t + W)
    assert admitted
    assert state.used == LIMIT
    admitted, [state] = await store.check_windows([check()], 1, now_us=t + W)
    assert not admitted
    assert state.reset_us == 1000


async def test_no_double_burst_across_a_fixed_window_edge(store: RedisStore) -> None:
    edge = (start_time() // W + 1) * W  # where a fixed window would reset its counter
    for _ in range(LIMIT):
        admitted, _ = await store.check_windows([check()], 1, now_us=edge - 1000)
        assert admitted
    for after in (1000, W // 2, W - 1001):
        admitted, [state] = await store.check_windows([check()], 1, now_us=edge + after)
        assert not admitted, f"admitted {after} us after the edge"
        assert state.reset_us == W - 1000 - after
    admitted, _ = await store.check_windows([check()], 1, now_us=edge - 1000 + W)
    assert admitted


async def test_admissions_are_exact_for_any_sliding_window(store: RedisStore) -> None:
    """Random arrivals over three windows: no window of length W ever holds more than the
    limit, and every refusal happened when the window ending then was full."""
    rng = random.Random(7)
    t = start_time()
    arrivals = sorted(t + rng.randrange(3 * W) for _ in range(200))
    admitted_at: list[int] = []
    for now in arrivals:
        admitted, _ = await store.check_windows([check(limit=10)], 1, now_us=now)
        in_window = sum(1 for a in admitted_at if a > now - W)
        if admitted:
            admitted_at.append(now)
            assert in_window + 1 <= 10
        else:
            assert in_window == 10
    assert len(admitted_at) >= 30


async def test_hits_addend_weighs_and_reset_waits_for_enough_room(store: RedisStore) -> None:
    t = start_time()
    admitted, [state] = await store.check_windows([check()], 3, now_us=t)
    assert admitted
    assert state.used == 3
    admitted, [state] = await store.check_windows([check()], 3, now_us=t + 10)
    # 3 + 3 > 5: the 3 hits at t must leave the window first.
    assert not admitted
    assert state.used == 3
    assert state.reset_us == W - 10
    admitted, [state] = await store.check_windows([check()], 2, now_us=t + 20)
    assert admitted
    assert state.used == 5
    admitted, [state] = await store.check_windows([check()], 6, now_us=t + 30)
    assert not admitted
    assert state.reset_us == W


async def test_descriptors_are_admitted_together_or_not_at_all(store: RedisStore) -> None:
    t = start_time()
    roomy, tight = check("roomy", limit=5), check("tight", limit=1)
    admitted, states = await store.check_windows([roomy, tight], 1, now_us=t)
    assert admitted
    assert [s.used for s in states] == [1, 1]
    admitted, states = await store.check_windows([roomy, tight], 1, now_us=t + 1)
    assert not admitted
    assert [(s.used, s.over) for s in states] == [(1, False), (1, True)]


async def test_a_shadow_check_is_counted_but_never_refuses(store: RedisStore) -> None:
    t = start_time()
    enforced, shadow = check("enforced"), check("shadow", limit=1, shadow=True)
    for i in range(3):
        admitted, [e, s] = await store.check_windows([enforced, shadow], 1, now_us=t + i)
        assert admitted
        assert e.used == i + 1
        assert s.over == (i > 0)
        assert s.used == 1


async def test_concurrent_callers_on_two_replicas_never_exceed_the_limit(
    store: RedisStore, redis_server: Backend
) -> None:
    replica = RedisStore(redis_server.url, timeout_seconds=5, key_prefix=store.key_prefix)
    limit = check(limit=50)
    try:
        outcomes = await asyncio.gather(
            *((store if i % 2 else replica).check_windows([limit], 1) for i in range(300))
        )
    finally:
        await replica.close()
    assert sum(admitted for admitted, _ in outcomes) == 50
    assert max(states[0].used for _, states in outcomes) == 50


async def test_a_flushed_script_is_loaded_again(private_redis: PrivateRedis) -> None:
    """EVALSHA answers NOSCRIPT after SCRIPT FLUSH (or a Redis restart); decisions go on."""
    store = RedisStore(private_redis.url, timeout_seconds=2)
    client = redis.Redis.from_url(private_redis.url)
    try:
        await store.load_scripts()
        t = start_time()
        assert (await store.check_windows([check()], 1, now_us=t))[0]
        await client.script_flush()
        admitted, [state] = await store.check_windows([check()], 1, now_us=t + 1)
        assert admitted
        assert state.used == 2
    finally:
        await store.close()
        await client.aclose()
