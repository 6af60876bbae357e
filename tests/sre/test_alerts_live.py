"""The real alert rules fire in the stack's real Prometheus when the failure is real.

The rules are the production ones; only the development Prometheus's 5 s scrape and
evaluation intervals make the waits short: TargetDown (for: 1m) fires about 70 s
after a process stops, AuditLogsDropped (no for:) one or two evaluations after the
first drop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.harness.stack import Stack
from tests.sre.prometheus import Prometheus

# TargetDown's `for: 1m`, plus a scrape and an evaluation interval (5 s each), plus slack.
TARGET_DOWN_WITHIN = 60 + 5 + 5 + 30
DROP_ALERT_WITHIN = 45
# The burst is bounded: the test stack runs the gateway with a small audit buffer.
MAX_BURST = 3_000
CONCURRENCY = 32
GATEWAY_DROPS = 'sum(audit_logs_dropped_total{job="gateway", reason="buffer_full"}) or vector(0)'
# Every gateway replica buffers on its own; a burst spread over them must fill them all.
GATEWAY_CAPACITY = 'sum(audit_queue_capacity{job="gateway"})'


@pytest.fixture(scope="module")
async def audit_stopped(stack: Stack, prometheus: Prometheus) -> AsyncIterator[float]:
    """The audit service is stopped for this module's tests (the monotonic time it stopped).

    Afterwards it is started again and its TargetDown alert must resolve.
    """
    await asyncio.to_thread(stack.stop, "audit")
    stopped_at = time.monotonic()
    try:
        yield stopped_at
    finally:
        await asyncio.to_thread(stack.start, "audit")
    await prometheus.wait_until_quiet("TargetDown", {"job": "audit"}, within=60)


async def _gateway_drops(prometheus: Prometheus) -> float:
    (sample,) = await prometheus.query(GATEWAY_DROPS)
    return float(sample["value"][1])


async def _gateway_audit_capacity(prometheus: Prometheus) -> int:
    (sample,) = await prometheus.wait_for_series(GATEWAY_CAPACITY, within=30)
    return int(float(sample["value"][1]))


async def _burst(web_url: str, requests: int) -> None:
    """`requests` requests, each of which the gateway audits as one event: paths no route
    matches (404). Refused requests (401, 429) would not do: they are aggregated into a
    few events (docs/audit.md, Refused requests)."""
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=web_url, timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY)
    ) as client:

        async def one(n: int) -> int:
            async with gate:
                return (await client.get(f"/authors/{n}/burst")).status_code

        statuses = await asyncio.gather(*(one(n) for n in range(requests)))
    assert set(statuses) == {404}, set(statuses)


async def test_audit_drops_fire_the_drop_alert(
    stack: Stack, prometheus: Prometheus, audit_stopped: float
) -> None:
    capacity = await _gateway_audit_capacity(prometheus)
    assert capacity < MAX_BURST, (
        f"the gateway's audit buffer holds {capacity} events; run the test stack with a "
        f"small GATEWAY_AUDIT_BUFFER_CAPACITY so that a burst can fill it"
    )
    before = await _gateway_drops(prometheus)
    # With audit down nothing is acknowledged, so the buffer fills and the rest drop.
    await _burst(stack.web_url, capacity + 100)
    await prometheus.wait_for_series(f"({GATEWAY_DROPS}) >= {before + 100}", within=30)

    alert = await prometheus.wait_for_alert(
        "AuditLogsDropped",
        {"job": "gateway", "reason": "buffer_full"},
        state="firing",
        within=DROP_ALERT_WITHIN,
    )
    assert alert["annotations"]["runbook_url"] == "docs/runbooks/AuditLogsDropped.md"


async def test_a_stopped_service_fires_target_down(
    prometheus: Prometheus, audit_stopped: float
) -> None:
    labels = {"job": "audit", "instance": "audit-0"}
    left = TARGET_DOWN_WITHIN - (time.monotonic() - audit_stopped)
    alert = await prometheus.wait_for_alert("TargetDown", labels, state="firing", within=left)
    assert alert["labels"]["severity"] == "critical"
    # `for: 1m` is honoured: the alert did not fire before the process had been down a minute.
    assert time.monotonic() - audit_stopped >= 60


async def test_traefik_marks_the_stopped_backend_unhealthy(
    prometheus: Prometheus, audit_stopped: float
) -> None:
    left = TARGET_DOWN_WITHIN - (time.monotonic() - audit_stopped)
    alert = await prometheus.wait_for_alert(
        "TraefikBackendUnhealthy", {"service": "audit@file"}, state="firing", within=left
    )
    assert alert["annotations"]["runbook_url"] == "docs/runbooks/TraefikBackendUnhealthy.md"
