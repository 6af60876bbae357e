"""Retention: events (and dead letters) older than `retention_days` are deleted in
small batches.

Each batch is its own short DELETE of the oldest expired rows (found through the
timestamp index), so no long lock is held and ingestion carries on in between.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Counter

from gatehouse_audit.repository import AuditRepository

log = structlog.get_logger(__name__)

RETENTION_DELETED = Counter(
    "audit_retention_deleted_total", "Audit events deleted because they outlived retention."
)


class AuditRetention:
    """Deletes expired events now (`purge`) or every `interval` seconds (`run`)."""

    def __init__(
        self, repository: AuditRepository, *, days: int, interval: float, batch_size: int
    ) -> None:
        self._repository = repository
        self._days = days
        self._interval = interval
        self._batch_size = batch_size

    async def purge(self, now: datetime | None = None) -> int:
        """Delete every event and dead letter older than the retention period; how many went."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self._days)
        total = 0
        for delete in (
            self._repository.delete_older_than,
            self._repository.delete_dead_letters_older_than,
        ):
            while True:
                deleted = await delete(cutoff, self._batch_size)
                total += deleted
                RETENTION_DELETED.inc(deleted)
                if deleted < self._batch_size:
                    break
        if total:
            log.info("expired audit events deleted", count=total, cutoff=cutoff.isoformat())
        return total

    async def run(self) -> None:
        """Purge now and then every interval, until cancelled; failures are logged."""
        while True:
            try:
                await self.purge()
            except Exception as error:
                log.warning("audit retention run failed", error=type(error).__name__)
            await asyncio.sleep(self._interval)
