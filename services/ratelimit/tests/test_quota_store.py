"""Quota grants of the sliding-window script on real Redis, with a deterministic clock:
partial grants, hits counted from the end of their lease, giving back, one count shared
with decisions, shadow checks, and no window ever spending more than the limit."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from gatehouse_ratelimit.store import QuotaCheck, RedisStore, WindowCheck

W = 60_000_000  # one minute, in microseconds
HOLD = 1_000_000  # a one-second lease


def start_time() -> int:
    # Real time, so that the keys' own expiry (relative to Redis's clock) stays sane.
    return int(time.time() * 1_000_000)


def window(key: str = "user", limit: int = 5, shadow: bool = False) -> WindowCheck:
    return WindowCheck(key=key, limit=limit, window_us=W, shadow=shadow)


def wants(
    hits: int, key: str = "user", limit: int = 5, reservation: str = "", returned: int = 0
) -> QuotaCheck:
    return QuotaCheck(window(key, limit), hits, HOLD, reservation, returned)


async def test_a_grant_is_what_fits_then_nothing_with_the_time_until_a_slot_frees(
    store: RedisStore,
) -> None:
    t = start_time()
    [first] = await store.grant_quota([wants(3)], share=1, now_us=t)
    assert (first.granted, first.used, first.over) == (3, 3, False)
    assert first.reservation
    # The hits count from the end of their lease: they leave the window at t + HOLD + W.
    assert first.reset_us == HOLD + W
    [partial] = await store.grant_quota([wants(7)], share=1, now_us=t + 10)
    assert (partial.granted, partial.used, partial.over) == (2, 5, False)
    [refused] = await store.grant_quota([wants(1)], share=1, now_us=t + 20)
    assert (refused.granted, refused.used, refused.over, refused.reservation) == (0, 5, True, "")
    assert refused.reset_us == HOLD + W - 20


async def test_a_grant_takes_at_most_a_share_of_the_room_and_at_least_one_hit(
    store: RedisStore,
) -> None:
    t = start_time()
    granted = []
    for i in range(12):
        [state] = await store.grant_quota([wants(100, limit=80)], share=8, now_us=t + i)
        granted.append(state.granted)
    # 80 // 8, then 70 // 8, 62 // 8, ... of what is left.
    assert granted == [10, 8, 7, 6, 6, 5, 4, 4, 3, 3, 3, 2]
    for i in range(20):
        [state] = await store.grant_quota([wants(100, limit=80)], share=8, now_us=t + 100 + i)
    assert state.used == 80
    assert state.granted == 0


async def test_granted_hits_leave_the_window_at_the_end_of_their_lease_plus_the_window(
    store: RedisStore,
) -> None:
    t = start_time()
    await store.grant_quota([wants(5)], share=1, now_us=t)
    [state] = await store.grant_quota([wants(1)], share=1, now_us=t + HOLD + W - 1)
    assert (state.granted, state.reset_us) == (0, 1)
    [state] = await store.grant_quota([wants(1)], share=1, now_us=t + HOLD + W)
    assert (state.granted, state.used) == (1, 1)


async def test_unspent_hits_go_back_once_and_free_their_room(store: RedisStore) -> None:
    t = start_time()
    [grant] = await store.grant_quota([wants(5)], share=1, now_us=t)
    assert grant.granted == 5
    # Give 3 back while asking for 1: the room they free is granted in the same call.
    [state] = await store.grant_quota(
        [wants(1, reservation=grant.reservation, returned=3)], share=1, now_us=t + 1
    )
    assert (state.returned, state.granted, state.used) == (3, 1, 3)
    # The same reservation given back again returns nothing more.
    [state] = await store.grant_quota(
        [wants(0, reservation=grant.reservation, returned=3)], share=1, now_us=t + 2
    )
    assert (state.returned, state.used) == (0, 3)
    # More than a reservation holds is capped at what it holds.
    [second] = await store.grant_quota([wants(2)], share=1, now_us=t + 3)
    [state] = await store.grant_quota(
        [wants(0, reservation=second.reservation, returned=50)], share=1, now_us=t + 4
    )
    assert (state.returned, state.used) == (2, 3)
    # An unknown reservation, or one of another descriptor, returns nothing.
    [other] = await store.grant_quota(
        [wants(0, key="other", reservation=grant.reservation, returned=2)], share=1, now_us=t + 5
    )
    assert other.returned == 0


async def test_what_is_left_of_a_reservation_keeps_its_place_in_the_window(
    store: RedisStore,
) -> None:
    t = start_time()
    [grant] = await store.grant_quota([wants(5)], share=1, now_us=t)
    await store.grant_quota(
        [wants(0, reservation=grant.reservation, returned=4)], share=1, now_us=t + 1
    )
    [later] = await store.grant_quota([wants(4)], share=1, now_us=t + 1000)
    assert (later.granted, later.used) == (4, 5)
    # The one spent hit still counts from t + HOLD, the later four from t + 1000 + HOLD.
    [state] = await store.grant_quota([wants(1)], share=1, now_us=t + HOLD + W)
    assert (state.granted, state.used) == (1, 5)


async def test_decisions_and_grants_share_one_count(store: RedisStore) -> None:
    t = start_time()
    admitted, [state] = await store.check_windows([window()], 2, now_us=t)
    assert admitted
    [grant] = await store.grant_quota([wants(10)], share=1, now_us=t + 1)
    assert (grant.granted, grant.used) == (3, 5)
    admitted, [state] = await store.check_windows([window()], 1, now_us=t + 2)
    assert not admitted
    # The decided hits leave at t + W; a decision then fits again, the grant's do not yet.
    admitted, [state] = await store.check_windows([window()], 2, now_us=t + W)
    assert admitted
    assert state.used == 5


async def test_a_shadow_check_grants_everything_wanted_and_counts_it(store: RedisStore) -> None:
    t = start_time()
    shadow = QuotaCheck(window("path", limit=2, shadow=True), 5, HOLD)
    enforced = wants(5, key="user", limit=3)
    shadowed, capped = await store.grant_quota([shadow, enforced], share=1, now_us=t)
    assert (shadowed.granted, shadowed.used, shadowed.over) == (5, 5, False)
    assert (capped.granted, capped.used) == (3, 3)
    [shadowed] = await store.grant_quota([shadow], share=1, now_us=t + 1)
    assert (shadowed.granted, shadowed.used, shadowed.over) == (5, 10, True)
    assert shadowed.reset_us > 0


@dataclass
class Held:
    """A caller's grant: hits left to spend, until when, and its name for giving back."""

    tokens: int = 0
    expires: int = 0
    reservation: str = ""


async def test_grants_spent_by_two_callers_never_exceed_the_limit_in_any_window(
    store: RedisStore,
) -> None:
    """Two callers that spend their grants only within their leases and give back what
    is left: every window of length W spends at most the limit, and little is lost."""
    rng = random.Random(11)
    limit = 20
    t = start_time()
    arrivals = sorted((t + rng.randrange(3 * W), rng.randrange(2)) for _ in range(400))
    held = [Held(), Held()]
    spent: list[int] = []
    for now, caller in arrivals:
        bucket = held[caller]
        if not (bucket.tokens and now < bucket.expires):
            demand = wants(rng.randrange(1, 6), "user", limit, bucket.reservation, bucket.tokens)
            [state] = await store.grant_quota([demand], share=8, now_us=now)
            held[caller] = bucket = Held(state.granted, now + HOLD, state.reservation)
        if bucket.tokens:
            bucket.tokens -= 1
            spent.append(now)
    for s in spent:
        assert sum(1 for a in spent if s - W < a <= s) <= limit
    # Three windows of 20, with a second of lease each and arrivals to spare.
    assert len(spent) >= 50
