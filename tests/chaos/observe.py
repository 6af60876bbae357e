"""What the chaos suite (and the soak) reads off the running platform.

- `supervised(stack)`: every program supervisord runs, with its pid, to prove that an
  outage restarted nothing but its target;
- `audit_counts(...)`: the audit pipeline's counters of each gateway replica and audit
  service from their /metrics, for the invariant
  received = written + dropped + queued;
- `stored_request_ids(...)`: which request ids reached the audit database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from gatehouse_audit.settings import Settings as AuditSettings
from tests.e2e.replicas import METRICS_PORTS
from tests.harness.stack import Stack

_STATUS_LINE = re.compile(r"^(?:\S+:)?(?P<name>\S+)\s+RUNNING\s+pid (?P<pid>\d+),")
# Processes whose /metrics carry the audit pipeline's counters.
AUDIT_PIPELINE = ("gateway", "audit")


def supervised(stack: Stack) -> dict[str, int]:
    """{program: pid} of every RUNNING program (`gateway-0`, `keycloak`, ...)."""
    status = stack.supervisorctl("status")
    found: dict[str, int] = {}
    for line in status.stdout.splitlines():
        match = _STATUS_LINE.match(line)
        if match:
            found[match["name"]] = int(match["pid"])
    return found


def replicas(programs: dict[str, int], process: str) -> list[str]:
    """The replica names of `process` among `programs` (`gateway-0`, `gateway-1`, ...)."""
    return sorted(name for name in programs if name.rsplit("-", 1)[0] == process)


def metrics_url(program: str) -> str:
    """The /metrics of one replica on its own port (docs/architecture.md: + 100 per replica).

    Read directly rather than through Traefik's metrics entrypoint, so that a fault of the
    proxy is never mistaken for one of the process.
    """
    process, k = program.rsplit("-", 1)
    return f"http://127.0.0.1:{METRICS_PORTS[process] + 100 * int(k)}/metrics"


async def scrape(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """{sample name with its labels: value} of one /metrics page."""
    response = await client.get(url, timeout=5)
    response.raise_for_status()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def total(samples: dict[str, float], name: str) -> float:
    """The sum of a metric's samples over all its label values."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


@dataclass(frozen=True)
class AuditPipeline:
    """One process's audit counters, read in one scrape (so they are consistent)."""

    program: str
    received: float
    written: float
    queued: float
    dropped: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0

    @property
    def balanced(self) -> bool:
        """received = written + dropped + queued."""
        return self.received == self.written + sum(self.dropped.values()) + self.queued

    def describe(self) -> str:
        """The counters, for an assertion message."""
        return (
            f"{self.program}: received {self.received:.0f} = written {self.written:.0f} + "
            f"dropped {self.dropped} + queued {self.queued:.0f}"
        )


def audit_pipeline(program: str, samples: dict[str, float]) -> AuditPipeline:
    """The audit counters among one scrape's samples."""
    dropped = {
        k.split('reason="', 1)[1].rstrip('"}'): v
        for k, v in samples.items()
        if k.startswith("audit_logs_dropped_total{")
    }
    return AuditPipeline(
        program=program,
        received=samples.get("audit_logs_total", 0.0),
        written=samples.get("audit_logs_written_total", 0.0),
        queued=samples.get("audit_queue_size", 0.0),
        dropped=dropped,
        started_at=samples.get("process_start_time_seconds", 0.0),
    )


async def audit_counts(client: httpx.AsyncClient, programs: list[str]) -> dict[str, AuditPipeline]:
    """The audit counters of each of `programs` that answers its /metrics now."""
    found: dict[str, AuditPipeline] = {}
    for program in programs:
        try:
            samples = await scrape(client, metrics_url(program))
        except httpx.HTTPError:
            continue  # stopped right now; its counters are read again once it is back
        found[program] = audit_pipeline(program, samples)
    return found


def dropped_since(before: dict[str, AuditPipeline], after: dict[str, AuditPipeline]) -> float:
    """Events counted as dropped between two readings, by processes alive at both."""
    lost = 0.0
    for program, now in after.items():
        then = before.get(program)
        if then is not None and then.started_at == now.started_at:
            lost += sum(now.dropped.values()) - sum(then.dropped.values())
        else:  # started (again) in between: everything it counted is new
            lost += sum(now.dropped.values())
    return lost


async def stored_request_ids(request_ids: set[str]) -> set[str]:
    """The ones among `request_ids` that have an audit event in the audit database."""
    connection = await asyncpg.connect(AuditSettings().database_url)
    try:
        rows = await connection.fetch(
            "SELECT DISTINCT request_id FROM audit_events WHERE request_id = ANY($1::text[])",
            sorted(request_ids),
        )
    finally:
        await connection.close()
    return {row["request_id"] for row in rows}
