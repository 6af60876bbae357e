"""Run the benchmarks (`make bench`) and write benchmarks/results/SUMMARY.md.

Each module benchmarks/bench_<name>.py has `async def run() -> dict`, which measures
its figures beside their baselines and writes results/<name>.json via
`benchmarks.common.write_result`. `python -m benchmarks authors audit` runs a subset.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path

from benchmarks.common import RESULTS
from benchmarks.plots import write_plots

HERE = Path(__file__).resolve().parent


def summary_markdown() -> str:
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench`; each figure beside its same-run baseline.",
        "",
    ]
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        m = result["machine"]
        lines += [
            f"## {result['benchmark']}",
            "",
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
        lines += ["", "| workload | calls/s | p50 ms | p99 ms |", "| --- | --- | --- | --- |"]
        for w in result["measurements"]:
            lines.append(f"| {w['name']} | {w['per_second']} | {w['p50_ms']} | {w['p99_ms']} |")
        lines.append("")
        for plot in sorted(RESULTS.glob(f"{path.stem}-*.png")):
            lines += [f"![{plot.stem}]({plot.name})", ""]
    return "\n".join(lines)


def main(names: list[str]) -> int:
    available = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    chosen = names or available
    unknown = set(chosen) - set(available)
    if unknown:
        print(f"unknown benchmarks {sorted(unknown)}; available: {available}")
        return 2
    for name in chosen:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"== {name}", flush=True)
        asyncio.run(module.run())
    (RESULTS / "SUMMARY.md").write_text(summary_markdown())
    print(f"wrote {RESULTS / 'SUMMARY.md'}")
    for plot in write_plots():
        print(f"wrote {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
