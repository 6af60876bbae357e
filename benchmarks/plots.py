"""PNG plots of the recorded results: latency distributions and WebSocket scale."""

from __future__ import annotations

import json
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
    return written
