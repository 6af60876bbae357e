"""The audit pipeline's metrics, shared by the gateway's audit client and the audit service.

Both sides export the same names; Prometheus's `job` label tells them apart:

- `audit_logs_total`: events received (client: handed to `enqueue`; service: accepted
  into its queue).
- `audit_logs_written_total`: events stored (client: acknowledged by the service;
  service: committed to PostgreSQL).
- `audit_logs_dropped_total{reason}`: events given up on, by reason.
- `audit_queue_size`: events received and neither written nor dropped yet.
- `audit_queue_capacity`: how many events the queue (client: buffer) holds at most.
- `audit_batch_size`: events per batch (client: sent; service: written).

The three counters and the gauge are read under one lock at every scrape, so each
scrape satisfies `audit_logs_total = audit_logs_written_total + sum(audit_logs_dropped_total)
+ audit_queue_size` exactly, even while events move through the pipeline.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

AUDIT_BATCH_SIZE = Histogram(
    "audit_batch_size",
    "Audit events per batch (sent by the client, written by the service).",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)


class AuditCounts(Collector):
    """Counts of one process's audit pipeline, moved together under a lock.

    Each method is one transition of a group of events, so that the invariant
    received = written + dropped + queued holds between any two calls.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received = 0
        self._written = 0
        self._queued = 0
        self._dropped: dict[str, int] = {}
        self._declared: set[str] = set()
        self._capacity = 0

    def declare_drop_reasons(self, *reasons: str) -> None:
        """Export these reasons at 0 before any drop, so that a restarted process's first
        drops show as an increase from 0 (a series born above zero hides them from
        `increase()` when an earlier process left the same value)."""
        with self._lock:
            self._declared.update(reasons)

    def set_capacity(self, capacity: int) -> None:
        """The queue's bound, exported so that alerts can compare the size against it."""
        with self._lock:
            self._capacity = capacity

    def received(self, n: int) -> None:
        """`n` events entered the pipeline and are now queued."""
        with self._lock:
            self._received += n
            self._queued += n

    def rejected(self, n: int, reason: str) -> None:
        """`n` events arrived and were dropped at once (for example a full buffer)."""
        with self._lock:
            self._received += n
            self._dropped[reason] = self._dropped.get(reason, 0) + n

    def written(self, n: int) -> None:
        """`n` queued events are stored."""
        with self._lock:
            self._queued -= n
            self._written += n

    def dropped(self, n: int, reason: str) -> None:
        """`n` queued events were given up on."""
        with self._lock:
            self._queued -= n
            self._dropped[reason] = self._dropped.get(reason, 0) + n

    def snapshot(self) -> tuple[int, int, dict[str, int], int]:
        """(received, written, dropped by reason, queued), consistent with each other."""
        with self._lock:
            return self._received, self._written, dict(self._dropped), self._queued

    def collect(self) -> Iterator[Metric]:
        received, written, dropped, queued = self.snapshot()
        total = CounterMetricFamily(
            "audit_logs", "Audit events received by this process's audit pipeline."
        )
        total.add_metric([], received)
        done = CounterMetricFamily("audit_logs_written", "Audit events stored.")
        done.add_metric([], written)
        lost = CounterMetricFamily(
            "audit_logs_dropped", "Audit events given up on, by reason.", labels=["reason"]
        )
        with self._lock:
            declared = dict.fromkeys(self._declared, 0)
        for reason, count in sorted((declared | dropped).items()):
            lost.add_metric([reason], count)
        size = GaugeMetricFamily(
            "audit_queue_size", "Audit events received and neither written nor dropped yet."
        )
        size.add_metric([], queued)
        with self._lock:
            capacity = self._capacity
        bound = GaugeMetricFamily(
            "audit_queue_capacity", "Audit events the queue (or client buffer) holds at most."
        )
        bound.add_metric([], capacity)
        yield from (total, done, lost, size, bound)


AUDIT_COUNTS = AuditCounts()
REGISTRY.register(AUDIT_COUNTS)
