"""gRPC load from ghz, a load generator in Go, read back as a `Measurement`.

Why not a Python grpc client in the benchmark process: on this 2-core machine such a
client spends about as much CPU per call as the Python server it measures, the two
compete for the same cores, and the client's cost is charged to the service. ghz
(pinned and cached by scripts/install-ghz.sh) sends the same calls from compiled code
on one core, at well under half of the server's CPU per call (measured against the
constant-reply server of bench_ratelimit), so a figure is the service's rather than
the client's. The requests are a list of plain messages that ghz parses once and sends
in turn, not a call template, which ghz would render and parse again for every call.

`run_ghz` has two modes:
- closed loop (`rps=None`): `concurrency` calls in flight for `seconds`, after a
  discarded warm-up run of `warmup` seconds;
- open loop (`rps=R`): R calls a second on ghz's schedule, each sent when it is due
  whatever is still in flight (`--async`), so queueing shows in the latencies instead
  of slowing the sender down.

Latencies come from ghz's per-call details. Calls still in flight when the duration
ends are left out (`--duration-stop=ignore`); every other call that did not answer OK
is counted in `Measurement.errors` by ghz's error text, and not in `calls`.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc_tools

from benchmarks.common import Measurement, process_cpu_seconds
from benchmarks.processes import REPO, installed

# Import paths for the .proto files: ours, and the well-known types grpc_tools ships.
PROTO_ROOT = REPO / "protos"
WELL_KNOWN_PROTOS = Path(grpc_tools.__file__).resolve().parent / "_proto"
LOAD_GENERATOR = "ghz v0.121.0 (scripts/install-ghz.sh), a separate Go process, one thread"


@dataclass(frozen=True)
class Target:
    """One gRPC method at one address."""

    address: str  # host:port, plaintext HTTP/2 (h2c)
    proto: str  # relative to protos/, e.g. "gatehouse_protos/authors/v1/authors.proto"
    call: str  # "package.Service/Method"
    # The :authority header, for Traefik routers that match on Host.
    authority: str | None = None


def _nanoseconds_to_ms(value: int) -> float:
    return value / 1e6


def read_report(name: str, report: dict[str, Any]) -> Measurement:
    """A Measurement from ghz's JSON report: answered calls, their latencies, errors."""
    details = report.get("details") or []
    latencies = [_nanoseconds_to_ms(d["latency"]) for d in details if d["status"] == "OK"]
    errors = Counter(d["error"] or d["status"] for d in details if d["status"] != "OK")
    return Measurement(name, len(latencies), report["total"] / 1e9, latencies, dict(errors))


async def run_ghz(
    name: str,
    target: Target,
    requests: Sequence[dict[str, Any]],
    *,
    concurrency: int,
    seconds: float,
    rps: float | None = None,
    warmup: float = 1.0,
    call_timeout: float = 5.0,
    server_pid: int | None = None,
) -> Measurement:
    """Drive `target` with ghz for `seconds`, call i sending `requests[i % len(requests)]`
    (messages in proto3's JSON mapping). See the module docstring for the two modes.
    With `server_pid`, the CPU time that process spent during the measured run is kept
    in `Measurement.cpu_seconds`."""
    binary = await installed("install-ghz.sh")
    argv = [
        binary,
        "--insecure",
        f"--proto={PROTO_ROOT / target.proto}",
        f"--import-paths={PROTO_ROOT},{WELL_KNOWN_PROTOS}",
        f"--call={target.call}",
        "--disable-template-functions",
        "--disable-template-data",
        # One Go thread: on 2 cores it sends more calls for less CPU than two, and leaves
        # the other core to the server and its database.
        "--cpus=1",
        f"--concurrency={concurrency}",
        f"--timeout={call_timeout}s",
        "--duration-stop=ignore",
        "--format=json",
    ]
    if target.authority:
        argv.append(f"--authority={target.authority}")
    if rps is not None:
        argv += [f"--rps={max(1, round(rps))}", "--async"]
    with tempfile.TemporaryDirectory(prefix="gatehouse-ghz-") as workdir:
        data = Path(workdir) / "requests.json"
        data.write_text(json.dumps(list(requests)))
        argv.append(f"--data-file={data}")
        if warmup > 0:
            await _ghz([*argv, f"--duration={warmup}s"], target.address)
        cpu_before = process_cpu_seconds(server_pid) if server_pid else None
        report = await _ghz([*argv, f"--duration={seconds}s"], target.address)
        cpu_after = process_cpu_seconds(server_pid) if server_pid else None
    measured = read_report(name, report)
    if cpu_before is not None and cpu_after is not None:
        measured.cpu_seconds = cpu_after - cpu_before
    if measured.errors:
        print(f"{name}: {sum(measured.errors.values())} calls failed: {measured.errors}")
    return measured


async def _ghz(argv: list[str], address: str) -> dict[str, Any]:
    """Run ghz with `argv` against `address`; its JSON report, parsed."""
    with tempfile.TemporaryDirectory(prefix="gatehouse-ghz-") as workdir:
        out = Path(workdir) / "report.json"
        process = await asyncio.create_subprocess_exec(
            *argv,
            f"--output={out}",
            address,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        if process.returncode != 0 or not out.exists():
            raise RuntimeError(f"ghz failed ({process.returncode}): {stderr.decode().strip()}")
        report: dict[str, Any] = json.loads(out.read_text())
        return report
