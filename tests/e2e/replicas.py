"""Reading and arranging a platform with two replicas of every service.

`two_replicas(stack)` makes sure the native stack runs two of each (see tests/e2e/README.md
for why a stack found with fewer is restarted rather than scaled in place);
`counter(process, k, name)` reads one replica's counter from its own metrics port.
"""

from __future__ import annotations

import re
import subprocess

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.backends import REPO
from tests.harness.stack import REPLICATED, Stack, native_env

REPLICAS = 2
RESTART_ATTEMPTS = 3
# docs/architecture.md: replica k listens on its process's ports + 100*k.
METRICS_PORTS = {"gateway": 9100, "authors": 9101, "audit": 9102, "ratelimit": 9103}
HTTP_PORT = 8000
_PROGRAM = re.compile(r"^(?P<group>\w+):(?P=group)-(?P<k>\d+)\s+RUNNING\b", re.MULTILINE)


def replica_counts(stack: Stack) -> dict[str, int]:
    """How many replicas of each replicated process supervisord runs."""
    status = stack.supervisorctl("status").stdout
    counts = dict.fromkeys(REPLICATED, 0)
    for match in _PROGRAM.finditer(status):
        counts[match["group"]] += 1
    return counts


def two_replicas(stack: Stack) -> None:
    """Leave the native stack running two replicas of every service.

    supervisord and Traefik read the replica counts from their environment when they
    start, so a stack running fewer is stopped and started again with
    `*_REPLICAS=2` (`scripts/run.sh down`, then `up -d`), the way tests/harness/stack.py
    starts it. It is left that way: every suite accepts two.
    """
    assert stack.native, "a stack run elsewhere must be started with two replicas of each"
    env = native_env(**{f"{p.upper()}_REPLICAS": str(REPLICAS) for p in REPLICATED})
    run = ["bash", str(REPO / "scripts" / "run.sh")]
    counts = replica_counts(stack)
    # Another test session may start the stack again between our `down` and `up` (with
    # its own counts): then ours finds it running, and we try again.
    for _ in range(RESTART_ATTEMPTS):
        if min(counts.values()) >= REPLICAS:
            return
        subprocess.run([*run, "down"], check=True, timeout=300, stdout=subprocess.DEVNULL)
        subprocess.run(
            [*run, "up", "-d"], check=True, timeout=900, stdout=subprocess.DEVNULL, env=env
        )
        counts = replica_counts(stack)
    raise AssertionError(f"the stack did not come up with {REPLICAS} replicas of each: {counts}")


def http_url(k: int) -> str:
    """Gateway replica k's own HTTP address, bypassing Traefik."""
    return f"http://127.0.0.1:{HTTP_PORT + 100 * k}"


async def counter(
    client: httpx.AsyncClient, process: str, k: int, name: str, **labels: str
) -> float:
    """The sum of counter `name` over the samples matching `labels`, on replica k now."""
    response = await client.get(f"http://127.0.0.1:{METRICS_PORTS[process] + 100 * k}/metrics")
    response.raise_for_status()
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )
