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
from typing import Any

from benchmarks import on_off
from benchmarks.bench_gateway import _run_sh
from benchmarks.bench_platform import RUNS, _settle, _stack_processes
from benchmarks.on_off import STATE_SECONDS
from benchmarks.wrk import wrk_binary
from tests.harness.stack import NATIVE_STATE, native_running

TRACING_ENV = NATIVE_STATE / "tracing.env"
# What reads the tracing settings at its start.
RESTARTED = ("traefik", "gateway:*", "authors:*", "audit:*", "ratelimit:*")
ON, OFF = "tracing on", "tracing off"
OVERHEAD_MAX = 1.05
RATIO = os.environ.get("BENCH_TRACING_RATIO")
# A restart: the gateway drains (5 s), then every replica starts and answers.
RESTART_SECONDS = 90.0
BUDGET_SECONDS = 120.0 + RUNS * 2 * (RESTART_SECONDS + STATE_SECONDS)


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
    async with on_off.session("tracing") as measured:
        await measured.alternate(ON, OFF, lambda state: _switch(tracing_settings(original, state)))
    return on_off.report(
        measured,
        "tracing",
        ON,
        OFF,
        OVERHEAD_MAX,
        {"sample_ratio": RATIO or "as the stack runs it (default 0.01)"},
    )
