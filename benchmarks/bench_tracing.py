"""tracing: what distributed tracing costs the platform (docs/tracing.md), with tracing as
the stack runs it and with tracing off, in the same run.

Needs the native platform (started here when it is not running, and then stopped again).
Tracing is switched by the stack's tracing settings, `$GATEHOUSE_STATE/tracing.env`
(written by scripts/run.sh, read at each start of Traefik and of every replica):
"on" is the file as it stands (by default: tracing on at the default sampling ratio,
TRACING_SAMPLE_RATIO 0.01), "off" is `TRACING_ENABLED=false`; each switch restarts Traefik
and every replica and waits until the stack answers again and has settled (under a tenth
of a core, as the platform benchmark waits before a run). The states alternate (on,
off, on, off, ...: RUNS pairs), so that a drift of the machine falls on both, and the
file's text is put back, the programs restarted, at the end.

In each state the platform benchmark's cache-hit and cache-miss scenarios run as there
(benchmarks/bench_platform.py: wrk, closed loop, benchmarks/platform.lua, the rate limits
raised for the run), and CPU is counted as there: every process of the stack, Jaeger
included, per request answered. Target: in each scenario, the median CPU per request
with tracing on is at most OVERHEAD_MAX times the median with tracing off.

Run: `uv run --group bench python -m benchmarks tracing` (BENCH_PLATFORM_RUNS and
BENCH_PLATFORM_SECONDS as for the platform benchmark; BENCH_TRACING_RATIO runs "on" at
another sampling ratio).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.baseline import AUTHORS_URL
from benchmarks.bench_gateway import _run_sh
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
    _settle,
    _stack_processes,
    raised_rate_limits,
)
from benchmarks.common import Figure, Measurement, write_result
from benchmarks.wrk import wrk_binary
from tests.harness.stack import NATIVE_STATE, local_stack, native_running

TRACING_ENV = NATIVE_STATE / "tracing.env"
# What reads the tracing settings at its start.
RESTARTED = ("traefik", "gateway:*", "authors:*", "audit:*", "ratelimit:*")
ON, OFF = "tracing on", "tracing off"
MEASURED = tuple(s for s in SCENARIOS if s.key in ("cache_hit", "cache_miss"))
OVERHEAD_MAX = 1.05
RATIO = os.environ.get("BENCH_TRACING_RATIO")
# A restart: the gateway drains (5 s), then every replica starts and answers.
RESTART_SECONDS = 90.0
BUDGET_SECONDS = 120.0 + RUNS * 2 * (
    RESTART_SECONDS + len(MEASURED) * 2 * (WARMUP_SECONDS + SECONDS + 6)
)


def tracing_settings(original: str, state: str, ratio: str | None = RATIO) -> str:
    """The text of tracing.env for `state` (ON or OFF), from the stack's own `original`:
    the same but for TRACING_ENABLED, and TRACING_SAMPLE_RATIO when `ratio` is given."""
    kept = [
        line
        for line in original.splitlines()
        if not line.startswith("TRACING_ENABLED=")
        and not (ratio is not None and line.startswith("TRACING_SAMPLE_RATIO="))
    ]
    if state == OFF:
        kept.append("TRACING_ENABLED=false")
    elif ratio is not None:
        kept.append(f"TRACING_SAMPLE_RATIO={ratio}")
    return "".join(f"{line}\n" for line in kept)


async def _switch(text: str) -> dict[str, tuple[int, bool]]:
    """Write the tracing settings, restart what reads them; the stack's processes after."""
    await asyncio.to_thread(TRACING_ENV.write_text, text)
    await asyncio.to_thread(_run_sh, "ctl", "restart", *RESTARTED)
    # Returns once every process answers again, directly and through Traefik.
    await asyncio.to_thread(_run_sh, "up", "-d")
    processes = await _stack_processes()
    # Then until the start-up work (imports, first connections, the log lines of the
    # restart being shipped) is over, as the platform benchmark waits before a run.
    await _settle(processes)
    return processes


async def run() -> dict[str, Any]:
    """Measure both states, alternating, and write results/tracing.json."""
    await wrk_binary()
    was_running = await asyncio.to_thread(native_running)
    await asyncio.to_thread(_run_sh, "up", "-d")
    original = TRACING_ENV.read_text() if TRACING_ENV.exists() else ""
    try:
        return await _measure(original)
    finally:
        if was_running:
            await _switch(original)
        else:
            TRACING_ENV.write_text(original)
            await asyncio.to_thread(_run_sh, "down")


async def _measure(original: str) -> dict[str, Any]:
    platform = local_stack(native=True)
    tag = f"bench-tracing-{uuid.uuid4().hex[:8]}"
    runs: dict[str, list[Run]] = {}
    systems: dict[str, System] = {}
    async with AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-tracing-")))
        await stack.enter_async_context(raised_rate_limits(platform, await _stack_processes()))
        authors = await asyncpg.connect(AUTHORS_URL)
        stack.push_async_callback(authors.close)
        stack.push_async_callback(
            authors.execute, "DELETE FROM authors WHERE name LIKE $1", f"{tag}-%"
        )
        (hot_id,) = await _authors(authors, f"{tag}-hot", 1)
        hot = _ids_file(workdir, "hot", [hot_id])
        print(
            f"tracing: {RUNS} pair(s) of runs of {SECONDS:.0f} s at {CONNECTIONS} connections",
            flush=True,
        )
        for rep in range(RUNS):
            for state in (ON, OFF):
                processes = await _switch(tracing_settings(original, state))
                system = System(
                    state,
                    WEB_URL,
                    8080,
                    processes,
                    [
                        f"{platform.metrics_url}/metrics/gateway/{k}"
                        for k in range(platform.replicas("gateway"))
                    ],
                )
                systems[state] = system
                hit_rate = 0.0
                for scenario in MEASURED:
                    ids = hot
                    if scenario.mode == "walk":
                        count = max(1000, int(hit_rate * MISS_HEADROOM * SECONDS))
                        prefix = f"{tag}-miss-{state.split()[-1]}-{rep}"
                        ids = _ids_file(workdir, prefix, await _authors(authors, prefix, count))
                    token = await asyncio.to_thread(platform.token, "admin")
                    one = await _http_run(
                        system, scenario, ids, hot, f"{tag}-{rep}", token, processes
                    )
                    one.system = state
                    runs.setdefault(f"{scenario.key} {state}", []).append(one)
                    _print_run(rep, one)
                    if scenario.mode == "hot":
                        hit_rate = one.rate
    return _report(systems, runs)


def _report(systems: dict[str, System], runs: dict[str, list[Run]]) -> dict[str, Any]:
    figures: list[Figure] = []
    measurements: list[Measurement] = []
    scenarios: dict[str, Any] = {}
    for scenario in MEASURED:
        both = {
            state: _aggregate(runs[f"{scenario.key} {state}"], systems[state])
            for state in (ON, OFF)
        }
        for state in (ON, OFF):
            measurements.append(
                _measurement(
                    f"{scenario.title}, {state}", both[state], runs[f"{scenario.key} {state}"]
                )
            )
        on, off = both[ON]["cpu_us_total"], both[OFF]["cpu_us_total"]
        ratio = on / off if off else float("nan")
        failed = any(both[state]["errors"] for state in (ON, OFF))
        figures.append(
            Figure(
                name=f"{scenario.key}: CPU per request, all processes, tracing on",
                value=round(on, 1),
                unit="µs",
                baseline=OFF,
                baseline_value=round(off, 1),
                target=f"<= {OVERHEAD_MAX} x {OFF}",
                met=ratio <= OVERHEAD_MAX and not failed,
            )
        )
        scenarios[scenario.key] = {**both, "ratio": round(ratio, 4)}
        print(
            f"\n{scenario.title}: {on:.0f} µs per request with tracing, {off:.0f} without "
            f"(ratio {ratio:.3f}, target <= {OVERHEAD_MAX}); requests/s "
            f"{both[ON]['per_second']:.0f} / {both[OFF]['per_second']:.0f}",
            flush=True,
        )
    return write_result(
        "tracing",
        figures,
        measurements,
        parameters={
            "runs": RUNS,
            "seconds": SECONDS,
            "connections": CONNECTIONS,
            "sample_ratio": RATIO or "as the stack runs it (default 0.01)",
        },
        scenarios=scenarios,
        runs=[r.record() for rs in runs.values() for r in rs],
    )
