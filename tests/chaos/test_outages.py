"""Each dependency stopped and restarted under steady traffic (docs/testing.md, chaos).

Every test checks the general promises (`assert_general`): no 5xx but the documented
503/504, no request past its deadline, no request left without an answer, sockets only
closed with documented codes, recovery within a bound once the dependency is back, no
other process restarted, and the audit invariant (every answered request stored, or
counted as dropped). Then it checks the fail mode of its dependency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from gatehouse_gateway.settings import Settings as GatewaySettings
from gatehouse_ratelimit.settings import Settings as RateLimitSettings
from tests.chaos.observe import replicas, supervised
from tests.chaos.outage import assert_general, healthy, metric_total, poll, run_outage
from tests.chaos.traffic import MixedTraffic, Outcome
from tests.harness.backends import run_script
from tests.harness.stack import Stack

pytestmark = pytest.mark.timeout(300)

# Keycloak (a JVM) takes longer to start; tokens must be issued again within this.
KEYCLOAK_RECOVERY_SECONDS = 240.0


async def metric_sum(programs: list[str], name: str) -> float:
    """A metric summed over its labels and over the replicas `programs`."""
    return sum([await metric_total(program, name) for program in programs])


def script(name: str, action: str) -> Callable[[], None]:
    """A call of scripts/<name> with `action` (the shared native PostgreSQL and Redis)."""
    return lambda: run_script(name, action)


def author_reads(outcome: Outcome) -> bool:
    """HTTP and WebSocket reads of authors."""
    return outcome.operation in ("GET /authors", "GET /authors/{id}", "ws GET_AUTHORS")


def audit_queries(outcome: Outcome) -> bool:
    """HTTP queries of the audit log."""
    return outcome.operation == "GET /audit-logs"


def refused_by(service: str) -> Callable[[Outcome], bool]:
    """API requests (not health reports) refused because `service` is unavailable."""
    return lambda o: (
        o.documented_unavailable and o.service == service and o.operation != "GET /health"
    )


def author_requests(outcome: Outcome) -> bool:
    """Every author request, HTTP or WebSocket."""
    return "author" in outcome.operation.lower()


async def test_redis_outage_follows_the_rate_limit_fail_mode(
    stack: Stack, traffic: MixedTraffic
) -> None:
    ratelimits = replicas(supervised(stack), "ratelimit")
    errors_before = await metric_sum(ratelimits, "rate_limit_backend_errors_total")
    open_before = await metric_sum(ratelimits, "rate_limit_fail_open_total")
    record = await run_outage(
        stack,
        traffic,
        stop=script("redis.sh", "stop"),
        start=script("redis.sh", "start"),
    )
    assert_general(record, restarted=set())
    errors = await metric_sum(ratelimits, "rate_limit_backend_errors_total")
    assert errors > errors_before, "the ratelimit service never noticed Redis was away"
    if RateLimitSettings().effective_fail_mode == "open":
        # Decisions fail open: requests keep passing, and each such decision is counted.
        assert record.count(lambda o: author_reads(o) and o.ok) > 0
        assert record.count(refused_by("ratelimit")) == 0
        opened = await metric_sum(ratelimits, "rate_limit_fail_open_total")
        assert opened > open_before
    else:
        refused = record.count(refused_by("ratelimit"))
        passed = record.count(lambda o: author_reads(o) and o.ok)
        # Closed at the service: the gateway's own fail mode decides what the client sees.
        assert (passed if GatewaySettings().rate_limit_fails_open else refused) > 0


async def test_postgres_outage_answers_503_and_loses_no_audit_event(
    stack: Stack, traffic: MixedTraffic
) -> None:
    record = await run_outage(
        stack,
        traffic,
        stop=script("postgres.sh", "stop"),
        start=script("postgres.sh", "start"),
    )
    assert_general(record, restarted=set())
    # The database being away is told to clients as the authors service unavailable.
    assert record.count(refused_by("authors")) > 0


async def test_keycloak_outage_keeps_issued_tokens_working(
    stack: Stack, traffic: MixedTraffic
) -> None:
    async def identity_is_down() -> None:
        refused = await asyncio.to_thread(stack.token_response, "viewer")
        assert refused.status_code != 200, "Keycloak still issued a token while stopped"

    record = await run_outage(
        stack,
        traffic,
        stop=lambda: stack.stop("keycloak"),
        start=lambda: stack.start("keycloak"),
        while_down=identity_is_down,
    )
    assert_general(record, restarted={"keycloak"})
    # Tokens are verified against cached keys: nothing the traffic asked for failed.
    failed = [o.describe() for o in record.during if o.server_error]
    assert not failed, f"requests failed while only Keycloak was away: {failed[:5]}"
    assert record.count(lambda o: author_reads(o) and o.ok) > 0

    async def issues_tokens() -> bool:
        return (await asyncio.to_thread(stack.token_response, "viewer")).status_code == 200

    left = record.started_at + KEYCLOAK_RECOVERY_SECONDS - time.monotonic()
    try:
        async with asyncio.timeout(left):
            await poll(issues_tokens, interval=2)
    except TimeoutError:
        pytest.fail(f"Keycloak issued no token within {KEYCLOAK_RECOVERY_SECONDS:.0f}s")


@pytest.mark.parametrize(
    ("service", "affected", "unaffected"),
    [
        pytest.param("authors", author_requests, audit_queries, id="authors"),
        pytest.param("audit", audit_queries, author_requests, id="audit"),
    ],
)
async def test_grpc_service_outage_is_contained(
    stack: Stack,
    traffic: MixedTraffic,
    service: str,
    affected: Callable[[Outcome], bool],
    unaffected: Callable[[Outcome], bool],
) -> None:
    record = await run_outage(
        stack,
        traffic,
        stop=lambda: stack.stop(service),
        start=lambda: stack.start(service),
    )
    restarted = set(replicas(record.pids_before, service))
    assert_general(record, restarted=restarted)
    # Requests needing the service get a prompt 503 naming it...
    assert record.count(lambda o: affected(o) and refused_by(service)(o)) > 0
    # ...and the rest of the API does not notice (audit events wait in the gateway).
    hurt = [o.describe() for o in record.during if unaffected(o) and not healthy(o)]
    assert not hurt, f"requests not needing {service} failed: {hurt[:5]}"
    assert record.count(lambda o: unaffected(o) and o.ok) > 0


async def test_ratelimit_outage_follows_the_gateway_fail_mode(
    stack: Stack, traffic: MixedTraffic
) -> None:
    gateways = replicas(supervised(stack), "gateway")
    unreachable = "gateway_rate_limit_unreachable_total"
    before = await metric_sum(gateways, unreachable)
    record = await run_outage(
        stack,
        traffic,
        stop=lambda: stack.stop("ratelimit"),
        start=lambda: stack.start("ratelimit"),
    )
    restarted = set(replicas(record.pids_before, "ratelimit"))
    assert_general(record, restarted=restarted)
    after = await metric_sum(gateways, unreachable)
    assert after > before, "the gateway never decided without the ratelimit service"
    if GatewaySettings().rate_limit_fails_open:
        assert record.count(refused_by("ratelimit")) == 0
        assert record.count(lambda o: author_reads(o) and o.ok) > 0
    else:
        assert record.count(refused_by("ratelimit")) > 0


async def test_gateway_replica_outage_is_invisible_to_clients(
    stack: Stack, traffic: MixedTraffic
) -> None:
    gateways = replicas(supervised(stack), "gateway")
    assert len(gateways) >= 2, (
        f"the chaos suite needs two gateway replicas (GATEWAY_REPLICAS=2), found {gateways}"
    )
    victim = gateways[-1]
    port = 8000 + 100 * int(victim.rsplit("-", 1)[1])

    async def victim_is_down() -> None:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.TransportError):
                await client.get(f"http://127.0.0.1:{port}/health/live", timeout=2)

    async def served_requests() -> bool:
        try:
            return await metric_total(victim, "http_requests_total") > 0
        except httpx.HTTPError:
            return False

    record = await run_outage(
        stack,
        traffic,
        stop=lambda: stack.stop(victim),
        start=lambda: stack.start(victim),
        while_down=victim_is_down,
        # Back in Traefik's rotation: the restarted replica answers requests again.
        back=served_requests,
    )
    assert_general(record, restarted={victim})
    # The other replica answers everything: no request fails, sockets reconnect.
    failed = [o.describe() for o in record.outcomes if o.channel == "http" and not healthy(o)]
    assert not failed, f"HTTP requests failed while one replica was away: {failed[:5]}"
