"""The audit invariant that ends each fuzz suite.

Every answer the gateway gave to a fuzzed request or frame has its audit event (found by
request id in the audit database), or was a refusal counted into an aggregated event
(`gateway_audit_refusals_aggregated_total`), or is a drop that an audit pipeline counted
with its reason (`audit_logs_dropped_total`). Answers that Traefik gave itself (no
`X-Request-ID`) never reached the gateway and are not the gateway's to audit.

The comparison is by request id with its multiplicity (a client may send the same id
twice), over the events stored since the suite began; the counters are read from every
gateway and audit replica's own /metrics before and after.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import httpx

from gatehouse_audit.settings import Settings as AuditSettings
from gatehouse_kit.audit_text import storable_field
from tests.chaos.observe import (
    AUDIT_PIPELINE,
    AuditPipeline,
    audit_counts,
    dropped_since,
    metrics_url,
    replicas,
    scrape,
    supervised,
    total,
)
from tests.harness.stack import Stack

# Batches reach the database within a second or two; aggregated refusals wait for the
# end of their window (GATEWAY_AUDIT_REFUSAL_WINDOW_SECONDS, 10 s by default).
ACCOUNTED_WITHIN_SECONDS = 30.0
AGGREGATED = "gateway_audit_refusals_aggregated_total"


@dataclass(frozen=True)
class _Reading:
    pipelines: dict[str, AuditPipeline]
    aggregated: float


class AuditLedger:
    """The request ids the gateway answered during one suite, and what accounts for them."""

    def __init__(self, stack: Stack) -> None:
        programs = supervised(stack)
        self._pipeline = [p for name in AUDIT_PIPELINE for p in replicas(programs, name)]
        self._gateways = replicas(programs, "gateway")
        self._answered: Counter[str] = Counter()
        self._since = datetime.now(UTC)
        self._before = asyncio.run(self._read())

    def record(self, request_id: str) -> None:
        """One answer of the gateway, with the request id it gave (`X-Request-ID`, `req_id`)."""
        self._answered[storable_field("request_id", request_id)] += 1

    def assert_accounted(self) -> None:
        """Every recorded answer has its event, an aggregated refusal's count or a drop."""
        assert self._answered, "the suite recorded no answer of the gateway"
        asyncio.run(self._assert_accounted())

    async def _assert_accounted(self) -> None:
        deadline = time.monotonic() + ACCOUNTED_WITHIN_SECONDS
        while True:
            stored = await self._stored()
            missing = sum(
                max(0, n - stored.get(request_id, 0)) for request_id, n in self._answered.items()
            )
            after = await self._read()
            aggregated = after.aggregated - self._before.aggregated
            dropped = dropped_since(self._before.pipelines, after.pipelines)
            if missing <= aggregated + dropped or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert missing <= aggregated + dropped, (
            f"{missing} of {sum(self._answered.values())} answers have no audit event, but "
            f"only {aggregated:.0f} refusals were aggregated and {dropped:.0f} events "
            f"dropped: {[p.describe() for p in after.pipelines.values()]}"
        )

    async def _read(self) -> _Reading:
        async with httpx.AsyncClient() as client:
            pipelines = await audit_counts(client, self._pipeline)
            aggregated = 0.0
            for gateway in self._gateways:
                aggregated += total(await scrape(client, metrics_url(gateway)), AGGREGATED)
        return _Reading(pipelines, aggregated)

    async def _stored(self) -> Counter[str]:
        connection = await asyncpg.connect(AuditSettings().database_url)
        try:
            rows = await connection.fetch(
                'SELECT request_id, count(*) AS n FROM audit_events WHERE "timestamp" >= $1'
                " AND request_id = ANY($2::text[]) GROUP BY request_id",
                self._since,
                sorted(self._answered),
            )
        finally:
            await connection.close()
        return Counter({row["request_id"]: row["n"] for row in rows})
