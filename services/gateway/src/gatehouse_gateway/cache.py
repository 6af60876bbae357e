"""Author reads served at the edge, kept consistent by the authors service's change events.

The consistency model (docs/performance.md, Edge cache):

- Every committed change is published as an `AuthorEvent` carrying the author's new
  state and version; each gateway process applies it here (`apply`) from the same
  subscription that feeds its WebSocket subscribers. An entry is only ever replaced by
  a newer version, so a read that was in flight while a change landed cannot put the
  older state back; a deletion leaves a tombstone for as long as an entry would live.
- The cache answers only while that subscription is confirmed. When it is lost, every
  entry is dropped and reads go to the authors service until it is back: events missed
  meanwhile cannot leave a stale entry behind.
- An event that is lost although the subscription held (a publish that failed after the
  commit is counted by the authors service) leaves an entry stale for at most
  `ttl_seconds`: no entry is served older than that.
- A write through this process updates its cache with the write's result at once, so a
  client that writes and then reads through the same replica sees its write.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from gatehouse_protos.authors.v1 import authors_pb2

CACHE_LOOKUPS = Counter(
    "gateway_author_cache_lookups_total",
    "Author reads looked up in the edge cache, by result (hit, miss, bypass: the change "
    "subscription is down).",
    ["result"],
)
CACHE_EVICTIONS = Counter(
    "gateway_author_cache_evictions_total",
    "Entries dropped from the edge cache to stay within its bound.",
)
CACHE_INVALIDATIONS = Counter(
    "gateway_author_cache_invalidations_total",
    "Change events applied to the edge cache, by kind (created, updated, deleted).",
    ["kind"],
)
CACHE_INVALIDATION_LAG = Histogram(
    "gateway_author_cache_invalidation_lag_seconds",
    "From a change's commit in the authors service to its event applied here.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CACHE_ENTRIES = Gauge(
    "gateway_author_cache_entries", "Authors and tombstones held by the edge cache."
)

_KINDS = {
    authors_pb2.AuthorEvent.KIND_CREATED: "created",
    authors_pb2.AuthorEvent.KIND_UPDATED: "updated",
    authors_pb2.AuthorEvent.KIND_DELETED: "deleted",
}


@dataclass(frozen=True, slots=True)
class _Entry:
    """An author's public shape and version, or (data None) the tombstone of a deletion."""

    data: dict[str, Any] | None
    version: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class CachedAuthor:
    """An author as the cache holds it."""

    data: dict[str, Any]
    version: int


class AuthorCache:
    """A bounded LRU of authors by id, fresh while the change subscription holds."""

    def __init__(
        self,
        max_entries: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_entries = max_entries
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._subscribed = False

    @property
    def serving(self) -> bool:
        """True when lookups may answer from the cache."""
        return self._subscribed and self._max_entries > 0

    def get(self, author_id: int) -> CachedAuthor | None:
        """The author `author_id` if the cache holds it fresh, else None (a miss).

        A deleted author is a miss too: the authors service gives the authoritative 404.
        """
        if not self.serving:
            CACHE_LOOKUPS.labels("bypass").inc()
            return None
        entry = self._entries.get(author_id)
        if entry is None or entry.data is None or entry.expires_at <= self._clock():
            CACHE_LOOKUPS.labels("miss").inc()
            return None
        self._entries.move_to_end(author_id)
        CACHE_LOOKUPS.labels("hit").inc()
        return CachedAuthor(entry.data, entry.version)

    def put(self, author_id: int, data: dict[str, Any] | None, version: int) -> None:
        """Remember `author_id` at `version` (data None: deleted), unless a newer one is known."""
        if not self.serving:
            return
        current = self._entries.get(author_id)
        now = self._clock()
        # A live entry yields only to a version at least as new; a tombstone to nothing.
        if (
            current is not None
            and current.expires_at > now
            and (current.version > version or (current.data is None and data is not None))
        ):
            return
        self._entries[author_id] = _Entry(data, version, now + self._ttl)
        self._entries.move_to_end(author_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
            CACHE_EVICTIONS.inc()
        CACHE_ENTRIES.set(len(self._entries))

    def apply(self, event: authors_pb2.AuthorEvent, data: dict[str, Any]) -> None:
        """Apply one change event (`data` is the author's public shape)."""
        kind = _KINDS.get(event.kind)
        if kind is None:
            return
        CACHE_INVALIDATIONS.labels(kind).inc()
        if event.HasField("occurred_at"):
            lag = time.time() - event.occurred_at.ToNanoseconds() / 1e9
            CACHE_INVALIDATION_LAG.observe(max(lag, 0.0))
        author = event.author
        if kind == "deleted":
            self.put(author.id, None, author.version + 1)
        else:
            self.put(author.id, data, author.version)

    def subscribed(self) -> None:
        """The change subscription is confirmed: start answering from an empty cache."""
        self._entries.clear()
        CACHE_ENTRIES.set(0)
        self._subscribed = True

    def unsubscribed(self) -> None:
        """The change subscription is lost: answer nothing, hold nothing."""
        self._subscribed = False
        self._entries.clear()
        CACHE_ENTRIES.set(0)
