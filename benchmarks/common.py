"""What every benchmark shares: latency statistics, figures with targets, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

# `make bench` finishes within TOTAL_BUDGET_SECONDS (BENCH_TOTAL_SECONDS overrides it);
# a benchmark module may set BUDGET_SECONDS, else it gets DEFAULT_BUDGET_SECONDS.
TOTAL_BUDGET_SECONDS = float(os.environ.get("BENCH_TOTAL_SECONDS", 15 * 60))
DEFAULT_BUDGET_SECONDS = 150.0


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of `samples`, nearest-rank."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Measurement:
    """Throughput and latency of one workload.

    `calls` and `latencies_ms` count answered calls only; failed ones are counted in
    `errors` (by reason), so that a run with errors says so in its result.
    `cpu_seconds` is the CPU time (user + system, every thread) that the process doing
    the work spent during the measured window, where the benchmark watched it: with
    `calls`, what one call costs that process, whatever else shares the machine.
    """

    name: str
    calls: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    errors: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_call(self) -> float | None:
        if self.cpu_seconds is None or not self.calls:
            return None
        return self.cpu_seconds / self.calls * 1e6

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "name": self.name,
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.rate, 1),
            "p50_ms": round(percentile(lat, 50), 3) if lat else None,
            "p99_ms": round(percentile(lat, 99), 3) if lat else None,
            "mean_ms": round(statistics.fmean(lat), 3) if lat else None,
            # Latency at each percentile 1..99, for the distribution plots.
            "percentiles_ms": [round(percentile(lat, q), 3) for q in range(1, 100)] if lat else [],
            "errors": self.errors,
            "cpu_us_per_call": round(cpu, 1) if (cpu := self.cpu_us_per_call) else None,
        }


async def measure(
    name: str,
    call: Callable[[int], Awaitable[object]],
    *,
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
    own_cpu: bool = False,
) -> Measurement:
    """Run `call(i)` from `concurrency` workers for `duration` seconds after a warm-up.

    `own_cpu` when this process does the work itself (a raw baseline) rather than only
    drive a server: `cpu_seconds` is then its CPU time over the measured window."""
    import asyncio

    latencies: list[float] = []
    counter = 0
    recording = False
    stop_at = 0.0

    async def worker() -> None:
        nonlocal counter
        while time.perf_counter() < stop_at:
            counter += 1
            started = time.perf_counter()
            await call(counter)
            if recording:
                latencies.append((time.perf_counter() - started) * 1000)

    stop_at = time.perf_counter() + warmup
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    recording = True
    cpu_before = time.process_time()
    started = time.perf_counter()
    stop_at = started + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    measured = Measurement(name, len(latencies), elapsed, latencies)
    if own_cpu:
        measured.cpu_seconds = time.process_time() - cpu_before
    return measured


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) that process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5), utime and stime, counted after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Figure:
    """One headline number beside its same-run baseline and its target."""

    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    target: str
    met: bool


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def write_result(
    name: str, figures: list[Figure], measurements: list[Measurement], **extra: Any
) -> dict[str, Any]:
    """Write benchmarks/results/<name>.json and return what was written."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "figures": [asdict(f) for f in figures],
        "measurements": [m.summary() for m in measurements],
        **extra,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
