"""HTTP load from vegeta, an open-loop load generator in Go, read back as a `VegetaReport`.

wrk (benchmarks/wrk.py) runs closed loop: a slow answer delays the next request, so its
latencies are those of a system kept exactly busy. A latency target at a given rate needs
open loop: vegeta (pinned and cached by scripts/install-vegeta.sh) sends one request
after another at a constant rate, each when it is due whatever is still in flight (it
adds workers as needed), so queueing shows in the latencies instead of slowing the
sending down. It runs on one core (`-cpus=1`), like ghz, and keeps no response bodies.

`run_vegeta` writes the attack's results (vegeta's own encoding) to a file and decodes
them with `vegeta encode -to=json`: one JSON object per request, with its status code
(0 when no response came: refused, reset, or unanswered within TIMEOUT_SECONDS, with
vegeta's error text), its latency in nanoseconds and the time it was sent.
`read_results` turns those lines into a `VegetaReport`; its latency percentiles are
exact (nearest rank over every request), not the estimate `vegeta report` prints.
"""

from __future__ import annotations

import asyncio
import json
import resource
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from benchmarks.common import non_2xx, percentile
from benchmarks.processes import installed, output_of
from benchmarks.wrk import TIMEOUT_SECONDS

LOAD_GENERATOR = "vegeta v12.12.0 (scripts/install-vegeta.sh), open loop, one thread"
# The percentiles a report gives: 1..99 (the latency plots) and 99.9.
QUANTILES = (*(float(q) for q in range(1, 100)), 99.9)


@dataclass
class VegetaReport:
    """One vegeta attack: every request by status, the latencies, the rates, vegeta's CPU.

    `seconds` runs from the first request sent to the last answer; `sent_per_second` is
    the rate the requests went out at (requests over the time from the first sent to the
    last sent, as `vegeta report` counts it)."""

    requests: int
    seconds: float
    sent_per_second: float
    statuses: dict[int, int]
    # Requests that got no response (status 0), by vegeta's error text.
    errors: dict[str, int]
    latencies_ms: list[float] = field(repr=False)
    cpu_seconds: float = 0.0

    @property
    def per_second(self) -> float:
        """Requests answered (or failed) per second, from the first sent to the last answer."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def failures(self) -> dict[str, int]:
        """Every response that was not 2xx (by status) and every request without one."""
        failed = non_2xx({s: n for s, n in self.statuses.items() if s})
        failed.update({f"no response: {error}": n for error, n in self.errors.items()})
        return failed

    @property
    def quantiles_ms(self) -> dict[float, float]:
        return {q: percentile(self.latencies_ms, q) for q in QUANTILES}


def read_results(lines: Iterable[str]) -> VegetaReport:
    """A VegetaReport from `vegeta encode -to=json` output: one result object a line.

    ValueError when there is no result at all or a line is not one of vegeta's results."""
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    sent: list[float] = []
    ends: list[float] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            result = json.loads(line)
            code, latency_ns = int(result["code"]), int(result["latency"])
            # RFC 3339 with nanoseconds; Python keeps microseconds.
            at = datetime.fromisoformat(result["timestamp"]).timestamp()
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"line {number} is not a vegeta result: {exc}: {line[:200]}") from exc
        statuses[code] += 1
        if code == 0:
            errors[result.get("error") or "unknown error"] += 1
        latencies.append(latency_ns / 1e6)
        sent.append(at)
        ends.append(at + latency_ns / 1e9)
    if not sent:
        raise ValueError("vegeta recorded no request")
    sending = max(sent) - min(sent)
    return VegetaReport(
        requests=len(sent),
        seconds=max(ends) - min(sent),
        sent_per_second=len(sent) / sending if sending > 0 else 0.0,
        statuses=dict(statuses),
        errors=dict(errors),
        latencies_ms=latencies,
    )


def targets_text(method: str, url: str, headers: dict[str, str]) -> str:
    """One request in vegeta's `http` targets format (request line, then its headers).

    ValueError for a line break in any part, which would end the request early."""
    lines = [f"{method} {url}", *(f"{name}: {value}" for name, value in headers.items())]
    if any("\n" in line or "\r" in line for line in lines):
        raise ValueError("a vegeta target's method, URL and headers must be single lines")
    return "\n".join(lines) + "\n"


async def run_vegeta(
    url: str, *, headers: dict[str, str], rate: float, seconds: float, method: str = "GET"
) -> VegetaReport:
    """`method url` with `headers` at `rate` requests a second for `seconds`, open loop.

    Returns once every request sent has been answered or has timed out."""
    binary = await installed("install-vegeta.sh")
    with tempfile.TemporaryDirectory(prefix="bench-vegeta-") as tmp:
        targets = Path(tmp) / "targets.http"
        # The headers carry a bearer token: the file is in a directory of this user only.
        targets.write_text(targets_text(method, url, headers))
        results = Path(tmp) / "results.bin"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        await _vegeta(
            binary,
            "attack",
            f"-targets={targets}",
            "-format=http",
            f"-rate={max(1, round(rate))}/1s",
            f"-duration={seconds}s",
            f"-timeout={TIMEOUT_SECONDS}s",
            "-max-body=0",
            f"-output={results}",
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        decoded = await _vegeta(binary, "encode", "-to=json", str(results))
    report = read_results(decoded.splitlines())
    report.cpu_seconds = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return report


async def _vegeta(binary: str, command: str, *args: str) -> str:
    """Run `vegeta command args` on one core; its standard output."""
    process = await asyncio.create_subprocess_exec(
        binary,
        "-cpus=1",
        command,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await output_of(process)
    if process.returncode != 0:
        raise RuntimeError(f"vegeta {command} failed ({process.returncode}): {errors.decode()}")
    return output.decode()
