"""How fast the machine's cores run while a benchmark measures: a probe beside the load.

On a shared virtual machine the CPU time that one fixed piece of work takes is not a
constant: on the 2-core development machine a loop of 200,000 such steps takes about
13 ms of CPU or about 23 ms, switching between the two for seconds at a time, with the
stack idle. A run of 10 s that falls into a slow stretch spends more CPU on every
request, in every process alike, and two states of a feature measured one after the
other (on_off.py) can then differ by the machine rather than by the feature.

The probe is a separate Python process that does a fixed unit of pure computation every
PERIOD seconds (about 2 % of one core) and reports the CPU time it took; a run's pace is
the median unit time during its measured window, recorded with the run (`pace_ms`).
It tells which runs fell into a slow stretch; it is not a factor to scale them by: in
the runs of 2026-12-07 the stack's CPU per request rose by about a third where the
probe's unit time nearly doubled (docs/performance.md, Tracing).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from types import TracebackType

PERIOD = 0.25
# One unit: a fixed loop of integer additions, about 5 ms of CPU at the fast pace.
_PROBE = f"""
import sys, time
while True:
    start = time.process_time()
    total = 0
    for i in range(80_000):
        total += i
    spent = time.process_time() - start
    sys.stdout.write(f"{{time.monotonic():.3f}} {{spent * 1000:.3f}}\\n")
    sys.stdout.flush()
    time.sleep({PERIOD})
"""


class Pace:
    """The probe, running while the context is open; `between` reads what it measured."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._samples: list[tuple[float, float]] = []

    async def __aenter__(self) -> Pace:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PROBE, stdout=asyncio.subprocess.PIPE
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._process is not None
        assert self._reader is not None
        self._process.kill()
        await self._process.wait()
        self._reader.cancel()

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            at, spent = line.split()
            self._samples.append((float(at), float(spent)))

    def between(self, start: float, end: float) -> float | None:
        """The median unit time (ms) of the samples taken from `start` to `end`
        (time.monotonic()), or None when there was none."""
        spent = [ms for at, ms in self._samples if start <= at <= end]
        return statistics.median(spent) if spent else None

    @staticmethod
    def now() -> float:
        return time.monotonic()
