"""One outage under load: steady traffic, a dependency away, back again, and the record.

`run_outage` drives the phases; `Record` holds what happened in each so that a test
asserts the general promises (`assert_general`) and its dependency's fail mode.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from tests.chaos.observe import (
    AUDIT_PIPELINE,
    AuditPipeline,
    audit_counts,
    dropped_since,
    metrics_url,
    replicas,
    scrape,
    stored_request_ids,
    supervised,
    total,
)
from tests.chaos.traffic import DOCUMENTED_CLOSES, MixedTraffic, Outcome
from tests.harness.stack import Stack

log = logging.getLogger(__name__)

# No answer may take longer than this: the gateway's deadlines (3 s per upstream call,
# 0.5 s per rate-limit decision) bound every request well below it.
HANG_SECONDS = 10.0
# Steady answers wanted before the dependency goes away.
BASELINE_ANSWERS = 12
BASELINE_TIMEOUT = 60.0
# After the load stops, the audit queues of every process must empty within this.
AUDIT_DRAIN_SECONDS = 60.0
# How long a dependency stays away under load: longer than the gateway's breaker needs
# to open (5 failures) and its open period (5 s), so the half-open path is exercised too.
DOWN_SECONDS = 8.0
# Requests succeed again within this long after the dependency is back.
RECOVERY_SECONDS = 45.0
# Healthy answers in a row, after the last failure, that count as recovered.
RECOVERED_HTTP = 8
RECOVERED_WS = 2


async def poll(check: Callable[[], Awaitable[bool]], interval: float = 0.5) -> None:
    """Return once `check()` is true, asking every `interval` seconds.

    For state held by other processes, which offers no event to await from here; bound
    the wait with `asyncio.timeout`.
    """
    while True:
        if await check():
            return
        await asyncio.sleep(interval)


def healthy(outcome: Outcome) -> bool:
    """An answer that is no failure of the platform: a success or a client error (4xx)."""
    return outcome.status is not None and not outcome.server_error


def recovered(outcomes: list[Outcome]) -> bool:
    """Requests of both kinds succeed again: healthy answers only, after the last failure."""
    requests = [o for o in outcomes if o.operation not in ("connect", "close")]
    last_failure = max((i for i, o in enumerate(requests) if not healthy(o)), default=-1)
    tail = requests[last_failure + 1 :]
    http = sum(1 for o in tail if o.channel == "http")
    ws = sum(1 for o in tail if o.channel == "ws")
    return http >= RECOVERED_HTTP and ws >= RECOVERED_WS


@dataclass
class Record:
    """What one outage run saw."""

    traffic: MixedTraffic
    stopped_at: float = 0.0
    started_at: float = 0.0
    recovered_after: float | None = None
    pids_before: dict[str, int] = field(default_factory=dict)
    pids_after: dict[str, int] = field(default_factory=dict)
    audit_before: dict[str, AuditPipeline] = field(default_factory=dict)
    audit_after: dict[str, AuditPipeline] = field(default_factory=dict)
    unbalanced: list[str] = field(default_factory=list)
    missing_events: set[str] = field(default_factory=set)

    @property
    def during(self) -> list[Outcome]:
        """Requests started while the dependency was away (stop begun to start done)."""
        return self.traffic.since(self.stopped_at, self.started_at)

    @property
    def outcomes(self) -> list[Outcome]:
        """Everything the traffic recorded."""
        return self.traffic.outcomes

    def summary(self) -> str:
        """Counts by outcome and the recovery time, for the test log."""
        kinds = collections.Counter(
            f"{o.channel} {o.status} {o.code or ''}".strip() for o in self.outcomes
        )
        slowest = max((o.seconds for o in self.outcomes), default=0.0)
        return (
            f"{len(self.outcomes)} outcomes {dict(kinds)}; "
            f"away {self.started_at - self.stopped_at:.1f}s; "
            f"recovered after {self.recovered_after}s; slowest {slowest:.2f}s; "
            f"missing audit events {len(self.missing_events)}"
        )

    def count(self, predicate: Callable[[Outcome], bool], *, during: bool = True) -> int:
        """How many outcomes (of the outage, or of the whole run) satisfy `predicate`."""
        return sum(1 for o in (self.during if during else self.outcomes) if predicate(o))


async def run_outage(
    stack: Stack,
    traffic: MixedTraffic,
    *,
    stop: Callable[[], None],
    start: Callable[[], None],
    down_seconds: float = DOWN_SECONDS,
    recovery_seconds: float = RECOVERY_SECONDS,
    while_down: Callable[[], Awaitable[None]] | None = None,
    back: Callable[[], Awaitable[bool]] | None = None,
) -> Record:
    """Steady load, `stop()`, `down_seconds` away, `start()` (always), recovery, audit check.

    `while_down` runs (and is awaited) while the dependency is away, for probes of its own;
    `back`, when given, must also turn true (polled under load) for the run to count as
    recovered.
    """
    record = Record(traffic)
    async with httpx.AsyncClient() as client:
        record.pids_before = supervised(stack)
        pipeline = _pipeline_programs(record.pids_before)
        record.audit_before = await audit_counts(client, pipeline)
        await traffic.start()
        async with asyncio.timeout(BASELINE_TIMEOUT):
            await traffic.until(lambda o: sum(map(healthy, o)) >= BASELINE_ANSWERS, after=0.0)
        record.stopped_at = time.monotonic()
        try:
            await asyncio.to_thread(stop)
            # The outage itself: the dependency stays away for this long under load.
            await asyncio.sleep(down_seconds)
            if while_down is not None:
                await while_down()
        finally:
            await asyncio.to_thread(start)
            record.started_at = time.monotonic()
        try:
            async with asyncio.timeout(recovery_seconds):
                record.recovered_after = await traffic.until(recovered, after=record.started_at)
                if back is not None:
                    await poll(back)
                record.recovered_after = time.monotonic() - record.started_at
        except TimeoutError:
            record.recovered_after = None
        await traffic.stop()
        record.pids_after = supervised(stack)
        record.audit_after = await _drained_audit(client, pipeline, record)
    answered = traffic.request_ids
    stored = await stored_request_ids(answered)
    record.missing_events = answered - stored
    log.info("outage: %s", record.summary())
    return record


def _pipeline_programs(pids: dict[str, int]) -> list[str]:
    return [name for process in AUDIT_PIPELINE for name in replicas(pids, process)]


async def _drained_audit(
    client: httpx.AsyncClient, programs: list[str], record: Record
) -> dict[str, AuditPipeline]:
    """Audit counters once every queue is empty (checking the invariant at each scrape)."""
    counts: dict[str, AuditPipeline] = {}

    async def drained() -> bool:
        nonlocal counts
        counts = await audit_counts(client, programs)
        record.unbalanced += [c.describe() for c in counts.values() if not c.balanced]
        return len(counts) == len(programs) and all(c.queued == 0 for c in counts.values())

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(AUDIT_DRAIN_SECONDS):
            await poll(drained)
    return counts


def assert_general(
    record: Record, *, restarted: set[str], recovery_seconds: float = RECOVERY_SECONDS
) -> None:
    """The promises every outage keeps (see docs/testing.md)."""
    outcomes = record.outcomes
    undocumented = [
        o.describe() for o in outcomes if o.server_error and not o.documented_unavailable
    ]
    assert not undocumented, f"5xx other than the documented 503/504: {undocumented[:10]}"
    slow = [o.describe() for o in outcomes if o.seconds > HANG_SECONDS]
    assert not slow, f"requests past their deadline: {slow[:10]}"
    unanswered = [
        o.describe()
        for o in outcomes
        if o.status is None and o.operation != "close" and not _closed_under(o)
    ]
    assert not unanswered, f"requests without an answer: {unanswered[:10]}"
    bad_closes = [
        o.describe() for o in outcomes if o.operation == "close" and not _documented_close(o)
    ]
    assert not bad_closes, f"sockets closed with an undocumented code: {bad_closes[:10]}"
    assert record.recovered_after is not None, (
        f"requests did not succeed again within {recovery_seconds:.0f}s of the restart; "
        f"last outcomes: {[o.describe() for o in outcomes[-10:]]}"
    )
    others = {
        name: pid
        for name, pid in record.pids_before.items()
        if name not in restarted and record.pids_after.get(name) != pid
    }
    assert not others, f"processes restarted besides the target: {sorted(others)}"
    assert not record.unbalanced, f"audit counters out of balance: {record.unbalanced[:5]}"
    queued = {p: c.queued for p, c in record.audit_after.items() if c.queued}
    assert not queued, f"audit events still queued after the load: {queued}"
    dropped = dropped_since(record.audit_before, record.audit_after)
    assert len(record.missing_events) <= dropped, (
        f"{len(record.missing_events)} answered requests have no audit event, "
        f"but only {dropped:.0f} were counted as dropped: {sorted(record.missing_events)[:5]}"
    )


def _documented_close(outcome: Outcome) -> bool:
    return (
        outcome.code is not None
        and outcome.code.removeprefix("close ").isdigit()
        and (int(outcome.code.removeprefix("close ")) in DOCUMENTED_CLOSES)
    )


def _closed_under(outcome: Outcome) -> bool:
    """A WebSocket request whose socket was closed under it with a documented code."""
    return outcome.channel == "ws" and _documented_close(outcome)


async def metric_total(program: str, name: str) -> float:
    """The sum of one metric over its labels on one replica, now."""
    async with httpx.AsyncClient() as client:
        return total(await scrape(client, metrics_url(program)), name)
