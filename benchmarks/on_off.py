"""What one feature of the stack costs: the platform benchmark's cache-hit and cache-miss
scenarios with the feature on and off, alternating in one run (on, off, on, off, ...:
RUNS pairs), so that a drift of the machine falls on both states; shared by the tracing
and the logging benchmarks, which each say how their feature is switched.

CPU is counted as in the platform benchmark: every process of the stack per request
answered. Target: in each scenario, the median CPU per request with the feature on is at
most the benchmark's overhead bound times the median with it off.

The two states run one after the other, and a shared machine's pace changes for seconds
at a time; each run records the pace a probe beside the load measured
(benchmarks/pace.py, `pace_ms` in the results), so that a run that fell into a slow
stretch shows it.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.baseline import AUTHORS_URL
from benchmarks.bench_platform import (
    CONNECTIONS,
    MISS_HEADROOM,
    RUNS,
    SCENARIOS,
    SECONDS,
    WARMUP_SECONDS,
    WEB_URL,
    Run,
    System,
    _aggregate,
    _authors,
    _http_run,
    _ids_file,
    _measurement,
    _print_run,
    _stack_processes,
    raised_rate_limits,
)
from benchmarks.common import Figure, Measurement, write_result
from benchmarks.pace import Pace
from tests.harness.stack import Stack, local_stack

MEASURED = tuple(s for s in SCENARIOS if s.key in ("cache_hit", "cache_miss"))
# The measured runs of one state, without what switching to it takes.
STATE_SECONDS = len(MEASURED) * 2 * (WARMUP_SECONDS + SECONDS + 6)

# Switches the stack to a state; the stack's processes after (as _stack_processes gives).
Switch = Callable[[str], Awaitable[dict[str, tuple[int, bool]]]]


@dataclass
class Session:
    """The native stack with raised rate limits, a hot author and the runs so far."""

    name: str
    platform: Stack
    tag: str
    workdir: Path
    authors: asyncpg.Connection
    hot: Path
    pace: Pace
    runs: dict[str, list[Run]] = field(default_factory=dict)
    systems: dict[str, System] = field(default_factory=dict)

    async def alternate(self, on: str, off: str, switch: Switch) -> None:
        """RUNS pairs of runs of every measured scenario, `on` then `off`."""
        print(
            f"{self.name}: {RUNS} pair(s) of runs of {SECONDS:.0f} s at {CONNECTIONS} connections",
            flush=True,
        )
        for rep in range(RUNS):
            for state in (on, off):
                await self._runs(rep, state, await switch(state))

    async def _runs(self, rep: int, state: str, processes: dict[str, tuple[int, bool]]) -> None:
        system = System(
            state,
            WEB_URL,
            8080,
            processes,
            [
                f"{self.platform.metrics_url}/metrics/gateway/{k}"
                for k in range(self.platform.replicas("gateway"))
            ],
        )
        self.systems[state] = system
        hit_rate = 0.0
        for scenario in MEASURED:
            ids = self.hot
            if scenario.mode == "walk":
                count = max(1000, int(hit_rate * MISS_HEADROOM * SECONDS))
                prefix = f"{self.tag}-miss-{state.split()[-1]}-{rep}"
                ids = _ids_file(self.workdir, prefix, await _authors(self.authors, prefix, count))
            token = await asyncio.to_thread(self.platform.token, "admin")
            one = await _http_run(
                system, scenario, ids, self.hot, f"{self.tag}-{rep}", token, processes
            )
            # The measured window ended as the run's figures were read, just before.
            end = self.pace.now()
            one.pace_ms = self.pace.between(end - one.seconds - 1.0, end)
            one.system = state
            self.runs.setdefault(f"{scenario.key} {state}", []).append(one)
            _print_run(rep, one)
            if scenario.mode == "hot":
                hit_rate = one.rate


@asynccontextmanager
async def session(name: str) -> AsyncIterator[Session]:
    """A session on the running native stack; its authors are deleted and the rate
    limits put back at the end."""
    platform = local_stack(native=True)
    tag = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{name}-")))
        await stack.enter_async_context(raised_rate_limits(platform, await _stack_processes()))
        authors = await asyncpg.connect(AUTHORS_URL)
        stack.push_async_callback(authors.close)
        stack.push_async_callback(
            authors.execute, "DELETE FROM authors WHERE name LIKE $1", f"{tag}-%"
        )
        (hot_id,) = await _authors(authors, f"{tag}-hot", 1)
        hot = _ids_file(workdir, "hot", [hot_id])
        pace = await stack.enter_async_context(Pace())
        yield Session(name, platform, tag, workdir, authors, hot, pace)


def report(
    measured: Session,
    feature: str,
    on: str,
    off: str,
    overhead_max: float,
    parameters: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """Each scenario's CPU per request with `feature` on against off, into
    results/<name>.json (with `extra` beside the figures)."""
    figures: list[Figure] = []
    measurements: list[Measurement] = []
    scenarios: dict[str, Any] = {}
    runs, systems = measured.runs, measured.systems
    for scenario in MEASURED:
        both = {
            state: _aggregate(runs[f"{scenario.key} {state}"], systems[state])
            for state in (on, off)
        }
        for state in (on, off):
            measurements.append(
                _measurement(
                    f"{scenario.title}, {state}", both[state], runs[f"{scenario.key} {state}"]
                )
            )
        cpu_on, cpu_off = both[on]["cpu_us_total"], both[off]["cpu_us_total"]
        ratio = cpu_on / cpu_off if cpu_off else float("nan")
        failed = any(both[state]["errors"] for state in (on, off))
        figures.append(
            Figure(
                name=f"{scenario.key}: CPU per request, all processes, {feature} on",
                value=round(cpu_on, 1),
                unit="µs",
                baseline=off,
                baseline_value=round(cpu_off, 1),
                target=f"<= {overhead_max} x {off}",
                met=ratio <= overhead_max and not failed,
            )
        )
        scenarios[scenario.key] = {**both, "ratio": round(ratio, 4)}
        print(
            f"\n{scenario.title}: {cpu_on:.0f} µs per request with {feature}, {cpu_off:.0f} "
            f"without (ratio {ratio:.3f}, target <= {overhead_max}); requests/s "
            f"{both[on]['per_second']:.0f} / {both[off]['per_second']:.0f}",
            flush=True,
        )
    return write_result(
        measured.name,
        figures,
        measurements,
        parameters={"runs": RUNS, "seconds": SECONDS, "connections": CONNECTIONS, **parameters},
        scenarios=scenarios,
        **extra,
        runs=[r.record() for rs in runs.values() for r in rs],
    )
