"""What every benchmark shares: latency statistics, figures with targets, result files."""

from __future__ import annotations

import json
import math
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
    # The smallest sample with at least q % of all at or below it; the product is rounded
    # first so that a float error (99.9 % of 1,000 is 999.0000000000001) adds no rank.
    rank = math.ceil(round(q / 100 * len(ordered), 6))
    return ordered[max(1, min(len(ordered), rank)) - 1]


def non_2xx(statuses: dict[int, int]) -> dict[str, int]:
    """The HTTP responses of `statuses` ({status: count}) that were not 2xx, as failures
    by status ("HTTP 503": count)."""
    return {f"HTTP {s}": n for s, n in statuses.items() if not 200 <= s < 300}


@dataclass
class Measurement:
    """Throughput and latency of one workload.

    `calls` and `latencies_ms` count answered calls only; failed ones are counted in
    `errors` (by reason), so that a run with errors says so in its result.
    `cpu_seconds` is the CPU time (user + system, every thread) that the process doing
    the work spent during the measured window, where the benchmark watched it: with
    `calls`, what one call costs that process, whatever else shares the machine.
    `quantiles_ms` ({percentile: ms}) stands in for `latencies_ms` when an external load
    generator (wrk) reports percentiles rather than every sample.
    """

    name: str
    calls: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    errors: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float | None = None
    quantiles_ms: dict[float, float] = field(default_factory=dict, repr=False)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_call(self) -> float | None:
        if self.cpu_seconds is None or not self.calls:
            return None
        return self.cpu_seconds / self.calls * 1e6

    def quantile_ms(self, q: float) -> float | None:
        """The latency at percentile `q`, from the samples or the reported percentiles."""
        if self.latencies_ms:
            return percentile(self.latencies_ms, q)
        return self.quantiles_ms.get(q)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms

        def ms(q: float) -> float | None:
            value = self.quantile_ms(q)
            return round(value, 3) if value is not None else None

        every = [ms(q) for q in range(1, 100)]
        return {
            "name": self.name,
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.rate, 1),
            "p50_ms": ms(50),
            "p99_ms": ms(99),
            "p99_9_ms": ms(99.9),
            "mean_ms": round(statistics.fmean(lat), 3) if lat else None,
            # Latency at each percentile 1..99, for the distribution plots.
            "percentiles_ms": every if None not in every else [],
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


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (field 3 of proc(5) first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) that process `pid` has used so far."""
    fields = _stat(pid)
    # Fields 14 and 15 of proc(5), utime and stime, counted after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessTable:
    """One reading of every process: parent, own CPU time, and the CPU time of its
    children that have exited and been waited for (cutime + cstime), in seconds."""

    parent: dict[int, int]
    own: dict[int, float]
    reaped: dict[int, float]

    @classmethod
    def read(cls) -> ProcessTable:
        tick = os.sysconf("SC_CLK_TCK")
        parent: dict[int, int] = {}
        own: dict[int, float] = {}
        reaped: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = _stat(entry.name)
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited meanwhile
            pid = int(entry.name)
            # proc(5) fields 4 (ppid), 14-15 (utime, stime), 16-17 (cutime, cstime).
            parent[pid] = int(fields[1])
            own[pid] = (int(fields[11]) + int(fields[12])) / tick
            reaped[pid] = (int(fields[13]) + int(fields[14])) / tick
        return cls(parent, own, reaped)

    def descendants(self, root: int) -> set[int]:
        """`root` and every live process below it."""
        children: dict[int, list[int]] = {}
        for pid, ppid in self.parent.items():
            children.setdefault(ppid, []).append(pid)
        found, todo = set(), [root]
        while todo:
            pid = todo.pop()
            if pid in self.own and pid not in found:
                found.add(pid)
                todo += children.get(pid, [])
        return found

    def tree_cpu_seconds(self, root: int) -> float:
        """CPU time of the process tree under `root`, exited members included.

        Each live member's own time plus what its waited-for children used: a child
        that exits between two readings moves from the first sum into its parent's
        cutime/cstime, so the difference of two readings is the tree's CPU in between
        (PostgreSQL's backends, threads and helper processes alike)."""
        return sum(self.own[p] + self.reaped[p] for p in self.descendants(root))


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
