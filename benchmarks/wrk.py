"""wrk, the HTTP load generator in C (Debian package `wrk`), read back as a `WrkReport`.

wrk runs closed loop: each connection sends its next request once the previous answer
is in. Its Lua script (benchmarks/platform.lua) makes the requests and, in `done()`,
writes a JSON report: requests, socket errors, responses by status, latency percentiles.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import non_2xx
from benchmarks.processes import output_of

# A request unanswered for this long counts as a timeout (a socket error).
TIMEOUT_SECONDS = 10


@dataclass
class WrkReport:
    """One wrk run: answered requests, failures by kind, latency percentiles, wrk's CPU."""

    requests: int
    seconds: float
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    quantiles_ms: dict[float, float] = field(repr=False)
    cpu_seconds: float

    @property
    def failures(self) -> dict[str, int]:
        """Every response that was not 2xx (by status) and every socket error (by kind)."""
        failed = non_2xx(self.statuses)
        failed.update({f"socket {kind}": n for kind, n in self.socket_errors.items() if n})
        return failed


async def wrk_binary() -> str:
    """The path of wrk; installed from Debian (apt-get) when missing and this is root."""
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        installer = await asyncio.create_subprocess_exec(
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=600",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "wrk",
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=asyncio.subprocess.DEVNULL,
        )
        await installer.wait()
        found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk, the HTTP load generator, is not installed: apt-get install -y wrk")
    return found


async def run_wrk(
    url: str,
    *,
    script: Path,
    args: list[str],
    env: dict[str, str],
    connections: int,
    seconds: float,
) -> WrkReport:
    """wrk with one thread and `connections` connections on `url` for `seconds`.

    `script` gets `args` and `env`, and BENCH_REPORT: the file its `done()` writes."""
    binary = await wrk_binary()
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        report_path = Path(tmp) / "report.json"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        process = await asyncio.create_subprocess_exec(
            binary,
            "--threads=1",
            f"--connections={connections}",
            f"--duration={max(1, round(seconds))}s",
            f"--timeout={TIMEOUT_SECONDS}s",
            f"--script={script}",
            url,
            "--",
            *args,
            env={**os.environ, **env, "BENCH_REPORT": str(report_path)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await output_of(process)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if process.returncode != 0 or not report_path.exists():
            raise RuntimeError(f"wrk failed ({process.returncode}): {output.decode()[-500:]}")
        report = json.loads(report_path.read_text())
    return WrkReport(
        requests=report["requests"],
        seconds=report["duration_us"] / 1e6,
        statuses={int(s): n for s, n in report["statuses"].items()},
        socket_errors=report["socket_errors"],
        quantiles_ms={float(q): us / 1000 for q, us in report["latency_us"].items()},
        cpu_seconds=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )
