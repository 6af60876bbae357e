"""PNG plots of the recorded results: latency distributions, WebSocket scale, and CPU per
request per process."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

# Files only, no display: the backend must be chosen before pyplot is imported.
matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.common import RESULTS


def latency_plot(result: dict[str, Any], out: Path) -> bool:
    """One CDF curve per workload that recorded latencies; False when there are none."""
    curves = [m for m in result["measurements"] if m.get("percentiles_ms")]
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for m in curves:
        ax.plot(m["percentiles_ms"], range(1, 100), label=f"{m['name']} ({m['per_second']}/s)")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("percentile")
    ax.set_title(f"{result['benchmark']}: latency distribution")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def scale_plot(result: dict[str, Any], out: Path) -> bool:
    """RSS against open sockets, from a result's `rss_series` ({name: [[sockets, rss_kib]]})."""
    series = result.get("rss_series")
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, points in series.items():
        ax.plot([p[0] for p in points], [p[1] / 1024 for p in points], marker="o", label=name)
    ax.set_xlabel("open WebSockets")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(f"{result['benchmark']}: memory against connections")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def cpu_plot(result: dict[str, Any], out: Path) -> bool:
    """Stacked bars of CPU µs per request by process, from a result's `cpu_us_per_request`
    ({scenario: {system: {process: µs}}}): one group per scenario, one bar per system."""
    scenarios = result.get("cpu_us_per_request")
    if not scenarios:
        return False
    processes = list(
        dict.fromkeys(p for bars in scenarios.values() for stack in bars.values() for p in stack)
    )
    colours = plt.get_cmap("tab20")
    # One bar per system that a scenario has (some systems run only some scenarios).
    width = 0.8 / max(len(bars) for bars in scenarios.values())
    fig, ax = plt.subplots(figsize=(11, 5.5))
    labelled: set[str] = set()
    for g, bars in enumerate(scenarios.values()):
        for i, (system, stack) in enumerate(bars.items()):
            x = g + (i - (len(bars) - 1) / 2) * width
            bottom = 0.0
            for j, process in enumerate(processes):
                height = stack.get(process, 0.0)
                if not height:
                    continue
                ax.bar(
                    x,
                    height,
                    width * 0.95,
                    bottom=bottom,
                    color=colours(j % 20),
                    edgecolor="white",
                    linewidth=0.3,
                    label=None if process in labelled else process,
                )
                labelled.add(process)
                bottom += height
            ax.annotate(system, (x, bottom), ha="center", va="bottom", fontsize="x-small")
    ax.set_xticks(range(len(scenarios)), [_wrapped(t) for t in scenarios], fontsize="small")
    ax.set_ylabel("CPU µs per request (user + system)")
    ax.set_title(f"{result['benchmark']}: CPU per request by process")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def _wrapped(title: str) -> str:
    """A scenario's title on short lines, so that neighbouring labels do not overlap."""
    head, _, tail = title.partition(": ")
    return "\n".join(textwrap.wrap(head, 14) + textwrap.wrap(tail, 14))


def write_plots() -> list[Path]:
    """Draw every plot the recorded results allow; return the files written."""
    written: list[Path] = []
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        latency = RESULTS / f"{path.stem}-latency.png"
        if latency_plot(result, latency):
            written.append(latency)
        scale = RESULTS / f"{path.stem}-scale.png"
        if scale_plot(result, scale):
            written.append(scale)
        cpu = RESULTS / f"{path.stem}-cpu.png"
        if cpu_plot(result, cpu):
            written.append(cpu)
    return written
