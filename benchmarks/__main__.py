"""Run the benchmarks (`make bench`) within a time bound and write benchmarks/results/SUMMARY.md.

Each module benchmarks/bench_<name>.py has `async def run() -> dict`, which measures
its figures beside their baselines and writes results/<name>.json via
`benchmarks.common.write_result`. `python -m benchmarks authors audit` runs a subset.

Every benchmark runs in a child process of its own with a time budget (the module's
`BUDGET_SECONDS`, else `DEFAULT_BUDGET_SECONDS`), cut to what is left of the overall
bound (`TOTAL_BUDGET_SECONDS`, 15 minutes). A child that overruns is interrupted (SIGINT,
so that its own clean-up runs), then killed with its process group after a grace period;
benchmarks that no longer fit are skipped. The summary and the exit status say so.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    DEFAULT_BUDGET_SECONDS,
    RESULTS,
    TOTAL_BUDGET_SECONDS,
    machine,
)
from benchmarks.plots import write_plots

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Time an interrupted benchmark gets to stop what it started before it is killed.
GRACE_SECONDS = 20.0
# Kept back from the overall bound for the summary and the plots.
RESERVE_SECONDS = 30.0
# A benchmark offered less than this is skipped rather than started and cut short.
MIN_USEFUL_SECONDS = 20.0


@dataclass
class Run:
    """How one benchmark of this invocation went."""

    name: str
    budget: float
    seconds: float
    outcome: str  # "ok", "failed (exit N)", "over budget", "skipped: ..."

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def available() -> list[str]:
    """The benchmark names, from benchmarks/bench_<name>.py."""
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def budget_of(name: str) -> float:
    """The time budget the benchmark module asks for."""
    module = importlib.import_module(f"benchmarks.bench_{name}")
    return float(getattr(module, "BUDGET_SECONDS", DEFAULT_BUDGET_SECONDS))


def run_child(name: str, allowance: float) -> tuple[float, str]:
    """Run one benchmark in its own process group for at most `allowance` seconds."""
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--child", name],
        cwd=REPO,
        start_new_session=True,
    )
    try:
        code = child.wait(timeout=allowance)
    except subprocess.TimeoutExpired:
        print(f"== {name}: over its {allowance:.0f} s budget, interrupting", flush=True)
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        # Whatever the benchmark started and left behind goes with its process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        return time.monotonic() - started, "over budget"
    outcome = "ok" if code == 0 else f"failed (exit {code})"
    return time.monotonic() - started, outcome


def _epoch(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def _run_section(runs: Sequence[Run], started: float, total: float) -> list[str]:
    m = machine()
    lines = [
        f"Run started {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(started))} on "
        f"{m['cpus']} CPUs, {m['memory_gib']} GiB, {m['platform']}, Python {m['python']}; "
        f"took {total:.0f} s of the {TOTAL_BUDGET_SECONDS:.0f} s bound.",
        "",
        "| benchmark | budget s | took s | outcome |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {r.name} | {r.budget:.0f} | {r.seconds:.0f} | {r.outcome} |" for r in runs]
    return [*lines, ""]


def _failed(errors: dict[str, int] | None) -> str:
    """How many calls failed and why (the commonest reasons), for a table cell."""
    if errors is None:
        return "not recorded"
    if not errors:
        return "none"
    reasons = sorted(errors.items(), key=lambda item: -item[1])[:3]
    why = "; ".join(f"{n} x {reason}".replace("|", "\\|") for reason, n in reasons)
    return f"**{sum(errors.values())}**: {why}"


def summary_markdown(
    runs: Sequence[Run] = (), started: float | None = None, total: float = 0.0
) -> str:
    """SUMMARY.md: this run's outcomes, then every benchmark's figures and plots.

    A result recorded before `started` is marked as not from this run.
    """
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench`; each figure beside its same-run baseline and its target.",
        "CPU µs/call: CPU time (all threads) of the process doing the work, per answered",
        "call: the service for gRPC paths (direct or through Traefik), the benchmark process",
        "for raw baselines;",
        "n/a where that process was not watched.",
        "",
    ]
    if started is not None:
        lines += _run_section(runs, started, total)
    for name in available():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        m = result["machine"]
        lines += [f"## {result['benchmark']}", ""]
        # `at` has whole seconds.
        if started is not None and _epoch(result["at"]) < int(started):
            lines += [f"**Not from this run** (recorded {result['at']}).", ""]
        lines += [
            f"Run {result['at']} on {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['platform']}.",
            "",
            "| figure | value | baseline | baseline value | target | met |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for f in result["figures"]:
            lines.append(
                f"| {f['name']} | {f['value']:.4g} {f['unit']} | {f['baseline']} | "
                f"{f['baseline_value']:.4g} | {f['target']} | {'yes' if f['met'] else 'NO'} |"
            )
        lines += [
            "",
            "| workload | calls/s | p50 ms | p99 ms | CPU µs/call | failed calls |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for w in result["measurements"]:
            cpu = w.get("cpu_us_per_call")
            lines.append(
                f"| {w['name']} | {w['per_second']} | {w['p50_ms']} | {w['p99_ms']} | "
                f"{cpu if cpu is not None else 'n/a'} | {_failed(w.get('errors'))} |"
            )
        lines.append("")
        for plot in sorted(RESULTS.glob(f"{path.stem}-*.png")):
            lines += [f"![{plot.stem}]({plot.name})", ""]
    if (RESULTS / "soak.md").exists():
        lines += [
            "## soak",
            "",
            "Not part of `make bench` (it takes ten minutes on its own): "
            "`uv run python -m benchmarks.soak --minutes 10`; see [soak.md](soak.md).",
            "",
        ]
    return "\n".join(lines)


def main(names: list[str]) -> int:
    """Run `names` (default: every benchmark) within the overall bound; 0 when all passed."""
    if names[:1] == ["--child"]:
        module = importlib.import_module(f"benchmarks.bench_{names[1]}")
        try:
            # asyncio's own loop, not uvloop: uvloop's timers have millisecond resolution,
            # and the open-loop pacers (1,000 messages a second) would send in bursts
            # (gateway_ws's p99 measured 196 ms on uvloop against 19 ms on asyncio).
            asyncio.run(module.run())
        except KeyboardInterrupt:
            # The parent's SIGINT at the end of the budget; run()'s clean-up has run.
            return 130
        return 0
    chosen = names or available()
    unknown = set(chosen) - set(available())
    if unknown:
        print(f"unknown benchmarks {sorted(unknown)}; available: {available()}")
        return 2
    started = time.time()
    deadline = time.monotonic() + TOTAL_BUDGET_SECONDS - RESERVE_SECONDS
    print(f"benchmarks {chosen}: {TOTAL_BUDGET_SECONDS:.0f} s in all", flush=True)
    runs: list[Run] = []
    for name in chosen:
        budget = budget_of(name)
        left = deadline - time.monotonic() - GRACE_SECONDS
        if left < MIN_USEFUL_SECONDS:
            print(f"== {name}: skipped, the overall deadline is reached", flush=True)
            runs.append(Run(name, budget, 0.0, "skipped: overall deadline reached"))
            continue
        allowance = min(budget, left)
        print(f"== {name} (budget {allowance:.0f} s)", flush=True)
        seconds, outcome = run_child(name, allowance)
        runs.append(Run(name, budget, seconds, outcome))
    RESULTS.mkdir(parents=True, exist_ok=True)
    # Plots first: the summary links every plot it finds.
    for plot in write_plots():
        print(f"wrote {plot}")
    total = time.time() - started
    (RESULTS / "SUMMARY.md").write_text(summary_markdown(runs, started, total))
    print(f"wrote {RESULTS / 'SUMMARY.md'}")
    for run in runs:
        print(f"{run.name}: {run.outcome} in {run.seconds:.0f} s (budget {run.budget:.0f} s)")
    print(f"total {time.time() - started:.0f} s of the {TOTAL_BUDGET_SECONDS:.0f} s bound")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
