"""The edge cache of author reads on its own: bound, freshness, versions, subscription."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from gatehouse_gateway.cache import AuthorCache
from gatehouse_protos.authors.v1 import authors_pb2

KIND = authors_pb2.AuthorEvent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def author(author_id: int, version: int, name: str = "a") -> dict[str, Any]:
    return {"id": author_id, "name": f"{name}{version}"}


def event(kind: KIND.Kind.ValueType, author_id: int, version: int) -> authors_pb2.AuthorEvent:
    occurred_at = Timestamp()
    occurred_at.GetCurrentTime()
    return authors_pb2.AuthorEvent(
        kind=kind,
        author=authors_pb2.Author(id=author_id, name=f"a{version}", version=version),
        occurred_at=occurred_at,
    )


def subscribed_cache(max_entries: int = 10, ttl: float = 5.0) -> tuple[AuthorCache, Clock]:
    clock = Clock()
    cache = AuthorCache(max_entries, ttl, clock)
    cache.subscribed()
    return cache, clock


def test_nothing_is_served_or_kept_before_the_subscription_is_confirmed() -> None:
    cache = AuthorCache(10, 5.0)
    cache.put(1, author(1, 1), 1)
    assert not cache.serving
    assert cache.get(1) is None
    cache.subscribed()
    assert cache.get(1) is None  # what was offered before was not kept


def test_a_put_author_is_served_until_its_ttl_expires() -> None:
    cache, clock = subscribed_cache(ttl=5.0)
    cache.put(1, author(1, 3), 3)
    hit = cache.get(1)
    assert hit is not None
    assert (hit.data, hit.version) == (author(1, 3), 3)
    clock.now += 4.9
    assert cache.get(1) is not None
    clock.now += 0.2
    assert cache.get(1) is None


def test_an_older_version_never_replaces_a_newer_one() -> None:
    cache, _ = subscribed_cache()
    cache.put(1, author(1, 5), 5)
    cache.put(1, author(1, 4), 4)  # a read that was in flight while version 5 landed
    hit = cache.get(1)
    assert hit is not None
    assert hit.version == 5


def test_events_update_entries_and_a_deletion_leaves_a_tombstone() -> None:
    cache, _ = subscribed_cache()
    cache.put(1, author(1, 1), 1)
    cache.apply(event(KIND.KIND_UPDATED, 1, 2), author(1, 2))
    hit = cache.get(1)
    assert hit is not None
    assert (hit.version, hit.data["name"]) == (2, "a2")
    cache.apply(event(KIND.KIND_DELETED, 1, 2), author(1, 2))
    assert cache.get(1) is None
    cache.put(1, author(1, 2), 2)  # a read of the deleted author, late
    assert cache.get(1) is None


def test_a_deletion_through_this_process_outranks_any_late_read() -> None:
    cache, _ = subscribed_cache()
    cache.put(7, None, 2**63)
    cache.put(7, author(7, 9), 9)
    cache.apply(event(KIND.KIND_UPDATED, 7, 10), author(7, 10))
    assert cache.get(7) is None


def test_losing_the_subscription_drops_everything_and_bypasses_the_cache() -> None:
    cache, _ = subscribed_cache()
    cache.put(1, author(1, 1), 1)
    cache.unsubscribed()
    assert cache.get(1) is None
    cache.put(1, author(1, 1), 1)
    cache.subscribed()
    assert cache.get(1) is None


def test_the_least_recently_used_entry_is_evicted_at_the_bound() -> None:
    cache, _ = subscribed_cache(max_entries=2)
    cache.put(1, author(1, 1), 1)
    cache.put(2, author(2, 1), 1)
    assert cache.get(1) is not None  # 2 is now the least recently used
    cache.put(3, author(3, 1), 1)
    assert cache.get(2) is None
    assert cache.get(1) is not None
    assert cache.get(3) is not None


def test_a_zero_bound_turns_the_cache_off() -> None:
    cache, _ = subscribed_cache(max_entries=0)
    cache.put(1, author(1, 1), 1)
    assert not cache.serving
    assert cache.get(1) is None
