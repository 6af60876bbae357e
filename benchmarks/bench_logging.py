"""logging: what shipping every process's log into the log store costs the platform
(docs/logging.md), with the log store and its shipper running and stopped, in the same
run; and how many bytes the store keeps per request.

Needs the native platform (started here when it is not running, and then stopped again).
"on" is the stack as it runs (VictoriaLogs, the OpenTelemetry Collector that ships to it
and vmalert, which evaluates the alerts from logs); "off" stops the three programs (the
processes still write their log files, as before the store existed). The states
alternate (on, off, on, off, ...: RUNS pairs), so that a drift of the machine falls on
both. Going back on, the shipper first ships what was written while it was off; a run
starts only once a request made after the start is in the store. The three run again at
the end.

In each state the platform benchmark's cache-hit and cache-miss scenarios run as there
(benchmarks/bench_platform.py: wrk, closed loop, benchmarks/platform.lua, the rate limits
raised for the run), and CPU is counted as there: every process of the stack, the store
and the shipper included when they run, per request answered. Target: in each scenario,
the median CPU per request with shipping on is at most OVERHEAD_MAX times the median
with it off. Then one more cache-hit run with shipping on measures what the store keeps
per request: log lines, bytes received, and bytes on disk (compressed, after a flush).

Run: `uv run --group bench python -m benchmarks logging` (BENCH_PLATFORM_RUNS and
BENCH_PLATFORM_SECONDS as for the platform benchmark).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks import on_off
from benchmarks.bench_gateway import _run_sh
from benchmarks.bench_platform import CONNECTIONS, RUNS, SCRIPT, SECONDS, WEB_URL, _stack_processes
from benchmarks.on_off import STATE_SECONDS
from benchmarks.wrk import run_wrk, wrk_binary
from tests.harness.stack import native_running

SHIPPING = ("victoria-logs", "otelcol", "vmalert")
LOGS_URL = "http://127.0.0.1:9428"
ON, OFF = "shipping on", "shipping off"
OVERHEAD_MAX = 1.03
# How long the shipper may take to catch up with what was written while it was off.
CATCH_UP_SECONDS = 120.0
BUDGET_SECONDS = (
    120.0 + RUNS * 2 * (CATCH_UP_SECONDS / 2 + STATE_SECONDS) + (CATCH_UP_SECONDS + SECONDS)
)


async def _shipped(client: httpx.AsyncClient) -> None:
    """Return once a request made now has reached the store (everything before it too)."""
    request_id = f"bench-logging-{uuid.uuid4()}"
    await client.get(f"{WEB_URL}/health/live", headers={"X-Request-ID": request_id})
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while time.monotonic() < deadline:
        found = await client.get(
            f"{LOGS_URL}/select/logsql/query",
            params={"query": f'request_id:="{request_id}" service:traefik'},
        )
        if found.status_code == 200 and found.text.strip():
            return
        await asyncio.sleep(1)
    raise RuntimeError(f"the shipper did not catch up within {CATCH_UP_SECONDS:.0f} s")


async def _switch(state: str, client: httpx.AsyncClient) -> dict[str, tuple[int, bool]]:
    """Start or stop the store and its shipper; the stack's processes after."""
    if state == ON:
        await asyncio.to_thread(_run_sh, "ctl", "start", *SHIPPING)
        await _shipped(client)
        return await _stack_processes()
    await asyncio.to_thread(_run_sh, "ctl", "start", *SHIPPING)
    processes = await _stack_processes()
    await asyncio.to_thread(_run_sh, "ctl", "stop", *SHIPPING)
    return {name: each for name, each in processes.items() if name not in SHIPPING}


async def _store_totals(client: httpx.AsyncClient) -> dict[str, float]:
    """The store's rows and bytes received, and its compressed size after a flush."""
    (await client.get(f"{LOGS_URL}/internal/force_flush")).raise_for_status()
    page = (await client.get(f"{LOGS_URL}/metrics")).text

    def total(name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", page, re.M))

    return {
        "lines": total("vl_rows_ingested_total"),
        "bytes_received": total("vl_bytes_ingested_total"),
        "bytes_stored": total("vl_compressed_data_size_bytes"),
    }


async def run() -> dict[str, Any]:
    """Measure both states, alternating, and write results/logging.json."""
    await wrk_binary()
    was_running = await asyncio.to_thread(native_running)
    await asyncio.to_thread(_run_sh, "up", "-d")
    try:
        return await _measure()
    finally:
        await asyncio.to_thread(_run_sh, "ctl", "start", *SHIPPING)
        if not was_running:
            await asyncio.to_thread(_run_sh, "down")


async def _measure() -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client, on_off.session("logging") as measured:
        await measured.alternate(ON, OFF, lambda state: _switch(state, client))
        token = await asyncio.to_thread(measured.platform.token, "admin")
        stored = await _stored_per_request(client, token, measured.hot, measured.tag)
    return on_off.report(measured, "shipping", ON, OFF, OVERHEAD_MAX, {}, stored_per_request=stored)


async def _stored_per_request(
    client: httpx.AsyncClient, token: str, hot: Path, tag: str
) -> dict[str, float]:
    """Lines and bytes the store keeps per request of a cache-hit run."""
    await _switch(ON, client)
    before = await _store_totals(client)
    report = await run_wrk(
        WEB_URL,
        script=SCRIPT,
        args=["hot", str(hot), f"{tag}-stored"],
        env={"BENCH_TOKEN": token},
        connections=CONNECTIONS,
        seconds=SECONDS,
    )
    await _shipped(client)
    after = await _store_totals(client)
    requests = max(report.requests, 1)
    per_request = {name: (after[name] - before[name]) / requests for name in before}
    print(
        f"\nstored per cache-hit request ({report.requests} requests): "
        f"{per_request['lines']:.2f} lines, {per_request['bytes_received']:.0f} bytes "
        f"received, {per_request['bytes_stored']:.0f} bytes on disk",
        flush=True,
    )
    return {"requests": report.requests, **{k: round(v, 2) for k, v in per_request.items()}}
