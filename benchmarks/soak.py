"""Soak: mixed HTTP and WebSocket traffic for a long while, every process's memory watched.

Run: `uv run python -m benchmarks.soak --minutes 10` (not part of `make bench`, whose
15-minute bound it would take most of, nor of `make test`).

It reaches the platform as the tests do (tests/harness/stack.py: a running stack, else
the native one started by scripts/run.sh), sends the chaos suite's mixed traffic
(tests/chaos/traffic.py) as the realm's `admin`, refreshing the token before it expires,
and every few seconds samples each supervisord program's process tree: resident memory
(VmRSS in /proc/<pid>/status) and open file descriptors (/proc/<pid>/fd).

The warm-up (a fifth of the run, at most two minutes) starts with a burst of concurrent
reads, so that every connection pool reaches its working size, and lets caches fill.
After it, a least-squares line through each series gives its trend. A series grows when
the line rises over the window by more than its noise threshold: the larger of twice the
residuals' standard deviation and a floor (2 % of the mean RSS but at least 2 MiB;
4 descriptors). The soak fails on any growing series (but Prometheus's memory, which
grows by design until its head block is cut every two hours: reported, not judged), on
any 5xx or unanswered request of the traffic, and when a program restarted.

Writes benchmarks/results/soak.json (via benchmarks.common), soak.md and soak-memory.png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.common import RESULTS, Figure, Measurement, write_result
from tests.chaos.observe import supervised
from tests.chaos.traffic import MixedTraffic, Outcome
from tests.harness.stack import Stack, running_stack

SAMPLE_SECONDS = 5.0
# Tokens live 300 s (deploy/keycloak); a fresh one well before that.
TOKEN_REFRESH_SECONDS = 120.0
# Warm-up burst: enough concurrent reads for every replica's database pool (10 kept
# connections each, services/authors settings) through both gateways.
BURST_PATHS = ("/authors/paginated", "/audit-logs")
BURST_CONCURRENCY = 30
BURST_ROUNDS = 3
# Programs whose memory grows by design over a run this short, reported but not judged:
# Prometheus keeps every new sample in its in-memory head block until the block is cut
# (every two hours).
GROWS_BY_DESIGN = {"prometheus": "TSDB head block, cut every 2 h"}
RSS_FLOOR_FRACTION = 0.02
RSS_FLOOR_KIB = 2048.0
FD_FLOOR = 4.0


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (supervisord runs `uv run` or a shell above each service)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone in the meantime
        # The command name may hold spaces; the parent pid is the 2nd field after it.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_kib(pid: int) -> int:
    """Resident memory of one process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # a zombie has no VmRSS


def open_fds(pid: int) -> int:
    """Open file descriptors of one process, from /proc/<pid>/fd."""
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Series:
    """One program's samples: seconds since the start, RSS (KiB), open descriptors."""

    program: str
    seconds: list[float] = field(default_factory=list)
    rss_kib: list[float] = field(default_factory=list)
    fds: list[float] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)

    def sample(self, at: float, root: int) -> None:
        """Add one sample of the process tree under `root`."""
        rss = fds = 0
        for pid in process_tree(root):
            try:
                rss += rss_kib(pid)
                fds += open_fds(pid)
            except OSError:
                continue  # a short-lived child ended between listing and reading
        self.seconds.append(at)
        self.rss_kib.append(rss)
        self.fds.append(fds)
        self.pids.add(root)


@dataclass(frozen=True)
class Trend:
    """A least-squares line through a series after the warm-up, and whether it grows."""

    slope_per_hour: float
    rise: float
    threshold: float
    first: float
    last: float

    @property
    def grows(self) -> bool:
        """The line rises over the window by more than the noise threshold."""
        return self.rise > self.threshold


def trend(xs: list[float], ys: list[float], floor: float) -> Trend:
    """The trend of `ys` over `xs` (seconds); `floor` is the least growth that counts."""
    slope, intercept = statistics.linear_regression(xs, ys)
    residuals = [y - (slope * x + intercept) for x, y in zip(xs, ys, strict=True)]
    noise = 2 * statistics.pstdev(residuals)
    window = xs[-1] - xs[0]
    return Trend(
        slope_per_hour=slope * 3600,
        rise=slope * window,
        threshold=max(noise, floor),
        first=ys[0],
        last=ys[-1],
    )


def after_warmup(series: Series, warmup: float) -> tuple[list[float], list[float], list[float]]:
    """(seconds, rss, fds) sampled after the warm-up."""
    keep = [i for i, t in enumerate(series.seconds) if t >= warmup]
    return (
        [series.seconds[i] for i in keep],
        [series.rss_kib[i] for i in keep],
        [series.fds[i] for i in keep],
    )


async def fill_pools(web_url: str, token: str, client_ip: str) -> None:
    """Concurrent reads at the start of the warm-up, up to every pool's working size.

    Connection pools open connections lazily and keep them: without this, a burst later
    in the run grows a pool (more descriptors, more memory) once, which is a step, not a
    leak, but would look like a trend.
    """
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": client_ip}
    async with httpx.AsyncClient(base_url=web_url, headers=headers, timeout=30) as client:
        for _ in range(BURST_ROUNDS):
            await asyncio.gather(
                *(client.get(path) for path in BURST_PATHS for _ in range(BURST_CONCURRENCY))
            )


async def soak(stack: Stack, minutes: float, sample_seconds: float) -> dict[str, Any]:
    """Run the traffic for `minutes`, sampling every program; return what was seen."""
    programs = supervised(stack)
    series = {name: Series(name) for name in programs}
    token = await asyncio.to_thread(stack.token, "admin")
    traffic = MixedTraffic(
        stack.web_url, token, http_rate=10.0, sockets=4, ws_rate=2.0, prefix="soak"
    )
    started = time.monotonic()
    duration = minutes * 60
    await traffic.start()
    await fill_pools(stack.web_url, token, traffic.client_ip)
    refreshed = started
    try:
        while (now := time.monotonic()) - started < duration:
            for name, pid in programs.items():
                series[name].sample(now - started, pid)
            if now - refreshed > TOKEN_REFRESH_SECONDS:
                await traffic.refresh(await asyncio.to_thread(stack.token, "admin"))
                refreshed = now
            await asyncio.sleep(sample_seconds)
    finally:
        await traffic.stop()
    restarted = sorted(n for n, pid in supervised(stack).items() if programs.get(n) != pid)
    return {
        "series": series,
        "outcomes": traffic.outcomes,
        "restarted": restarted,
        "seconds": time.monotonic() - started,
    }


def latency(name: str, outcomes: Iterable[Outcome], seconds: float) -> Measurement:
    """Throughput and latency of answered requests among `outcomes`."""
    answered = [o for o in outcomes if o.status is not None]
    return Measurement(name, len(answered), seconds, [o.seconds * 1000 for o in answered])


def report(
    seen: dict[str, Any], minutes: float, warmup: float, sample_seconds: float
) -> tuple[dict[str, Any], bool]:
    """Write soak.json, soak.md and soak-memory.png; return the result and whether it passed."""
    series: dict[str, Series] = seen["series"]
    outcomes: list[Outcome] = seen["outcomes"]
    figures: list[Figure] = []
    trends: dict[str, dict[str, Any]] = {}
    for name, s in sorted(series.items()):
        xs, rss, fds = after_warmup(s, warmup)
        mean_rss = statistics.fmean(rss)
        memory = trend(xs, rss, max(RSS_FLOOR_KIB, RSS_FLOOR_FRACTION * mean_rss))
        descriptors = trend(xs, fds, FD_FLOOR)
        trends[name] = {"rss_kib": memory.__dict__, "fds": descriptors.__dict__}
        expected = GROWS_BY_DESIGN.get(name)
        target = f"rise over the window <= noise ({memory.threshold / 1024:.1f} MiB)"
        figures.append(
            Figure(
                f"{name} RSS trend",
                memory.slope_per_hour / 1024,
                "MiB/h",
                "mean RSS (MiB)",
                mean_rss / 1024,
                f"not judged: {expected}" if expected else target,
                not memory.grows or expected is not None,
            )
        )
        figures.append(
            Figure(
                f"{name} open fds trend",
                descriptors.slope_per_hour,
                "fds/h",
                "mean open fds",
                statistics.fmean(fds),
                f"rise over the window <= noise ({descriptors.threshold:.0f} fds)",
                not descriptors.grows,
            )
        )
    server_errors = [o for o in outcomes if o.server_error or o.status is None]
    figures.append(
        Figure(
            "5xx or unanswered requests",
            len(server_errors),
            "requests",
            "requests answered",
            sum(1 for o in outcomes if o.status is not None),
            "0",
            not server_errors,
        )
    )
    seconds = seen["seconds"]
    measurements = [
        latency("soak http", (o for o in outcomes if o.channel == "http"), seconds),
        latency(
            "soak websocket",
            (o for o in outcomes if o.channel == "ws" and o.operation.startswith("ws ")),
            seconds,
        ),
    ]
    passed = all(f.met for f in figures) and not seen["restarted"]
    result = write_result(
        "soak",
        figures,
        measurements,
        minutes=minutes,
        warmup_seconds=warmup,
        sample_seconds=sample_seconds,
        restarted=seen["restarted"],
        passed=passed,
        trends=trends,
        samples={
            name: {"seconds": s.seconds, "rss_kib": s.rss_kib, "fds": s.fds}
            for name, s in sorted(series.items())
        },
        errors=[o.describe() for o in server_errors[:50]],
    )
    _plot(series, warmup, RESULTS / "soak-memory.png")
    (RESULTS / "soak.md").write_text(_markdown(result, trends))
    return result, passed


def _plot(series: dict[str, Series], warmup: float, out: Path) -> None:
    """RSS and descriptors over time, each as its change since the end of the warm-up."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for ax in (top, bottom):
        # Twenty distinct colours: one per program even with two replicas of everything.
        ax.set_prop_cycle(color=[plt.get_cmap("tab20")(i) for i in range(20)])
    for name, s in sorted(series.items()):
        start = next((i for i, t in enumerate(s.seconds) if t >= warmup), 0)
        minutes = [t / 60 for t in s.seconds]
        top.plot(minutes, [(r - s.rss_kib[start]) / 1024 for r in s.rss_kib], label=name)
        bottom.plot(minutes, [f - s.fds[start] for f in s.fds], label=name)
    for ax in (top, bottom):
        ax.axvline(warmup / 60, color="grey", linestyle="--", linewidth=1)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.grid(True, alpha=0.3)
    top.set_ylabel("RSS change (MiB)")
    top.set_title("soak: change of each process's memory and descriptors after the warm-up")
    bottom.set_ylabel("open descriptors, change")
    bottom.set_xlabel("minutes (dashed: end of warm-up)")
    top.legend(fontsize="small", ncol=4)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _markdown(result: dict[str, Any], trends: dict[str, dict[str, Any]]) -> str:
    m = result["machine"]
    lines = [
        "# Soak",
        "",
        f"`uv run python -m benchmarks.soak --minutes {result['minutes']:g}`, run {result['at']} "
        f"on {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['platform']}: "
        f"**{'passed' if result['passed'] else 'FAILED'}**.",
        "",
        f"Samples every {result['sample_seconds']:g} s of each program's process tree; trends "
        f"over the window after a {result['warmup_seconds']:.0f} s warm-up. A series grows "
        "when its least-squares line rises over the window by more than its noise threshold.",
        "",
        "| program | RSS first → last (MiB) | RSS slope (MiB/h) | rise / threshold (MiB) | "
        "fds first → last | fds slope (/h) | rise / threshold (fds) | grows |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, t in trends.items():
        r, f = t["rss_kib"], t["fds"]
        grows = "YES" if r["rise"] > r["threshold"] or f["rise"] > f["threshold"] else "no"
        if name in GROWS_BY_DESIGN:
            grows += f" (not judged: {GROWS_BY_DESIGN[name]})"
        lines.append(
            f"| {name} | {r['first'] / 1024:.1f} → {r['last'] / 1024:.1f} | "
            f"{r['slope_per_hour'] / 1024:+.2f} | {r['rise'] / 1024:+.2f} / "
            f"{r['threshold'] / 1024:.2f} | {f['first']:.0f} → {f['last']:.0f} | "
            f"{f['slope_per_hour']:+.1f} | {f['rise']:+.1f} / {f['threshold']:.1f} | "
            f"{grows} |"
        )
    lines += [
        "",
        "| traffic | requests | per second | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for w in result["measurements"]:
        lines.append(
            f"| {w['name']} | {w['calls']} | {w['per_second']} | {w['p50_ms']} | {w['p99_ms']} |"
        )
    errors = result["errors"]
    lines += [
        "",
        f"5xx or unanswered requests: {len(errors)}"
        + ("" if not errors else " — " + "; ".join(errors[:5])),
        f"Processes restarted during the soak: {', '.join(result['restarted']) or 'none'}.",
        "",
        "![soak memory](soak-memory.png)",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Parse the arguments, run the soak, report; 0 when nothing grew and nothing failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample-seconds", type=float, default=SAMPLE_SECONDS)
    args = parser.parse_args(argv)
    # Warm-up: a fifth of the run, at most two minutes.
    warmup = min(120.0, args.minutes * 60 / 5)
    with running_stack() as stack:
        if not stack.native:
            print("the soak samples /proc of supervisord's programs: it needs the native stack")
            return 2
        print(
            f"soak: {args.minutes:g} min of mixed traffic, sampling every {args.sample_seconds:g} s"
        )
        seen = asyncio.run(soak(stack, args.minutes, args.sample_seconds))
    result, passed = report(seen, args.minutes, warmup, args.sample_seconds)
    for f in result["figures"]:
        print(f"{'ok  ' if f['met'] else 'FAIL'} {f['name']}: {f['value']:.3g} {f['unit']}")
    verdict = "passed" if passed else "FAILED"
    print(f"wrote {RESULTS / 'soak.json'}, soak.md and soak-memory.png: {verdict}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
