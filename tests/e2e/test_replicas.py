"""The platform scaled out: two gateway replicas and two of each gRPC service behind Traefik.

Load spreads over the replicas, each keeps its own series in Prometheus, a broadcast
crosses replicas, and a rolling restart of one gateway replica under load fails no
request while its sockets are told 1001 and reconnect to the other one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e import ws
from tests.e2e.conftest import Tokens
from tests.e2e.replicas import counter, http_url, two_replicas
from tests.harness.stack import Stack
from tests.sre.prometheus import Prometheus, poll

# Requests through Traefik to see spread (round robin gives each replica about half).
SPREAD_REQUESTS = 40
# Prometheus scrapes every 5 s; a series shows up within a few intervals.
SCRAPE_WITHIN_SECONDS = 30.0
# Open-loop load during the rolling restart: well under admin's 1000 requests a minute.
LOAD_PER_SECOND = 10.0
SOCKETS = 4
# The restarted replica is stopped (drained), started and back in rotation within this.
RESTART_WITHIN_SECONDS = 60.0
RECONNECT_WITHIN_SECONDS = 20.0
GOING_AWAY = 1001
READS = {"method": "GET", "endpoint": "/authors/{id}"}
# A listing always reaches the authors service (reads of one author may be served by the
# gateway's edge cache): it shows the spread over the authors replicas too.
LISTS = {"method": "GET", "endpoint": "/authors"}


@pytest.fixture(scope="module")
def replicated(stack: Stack) -> Stack:
    """The stack with two replicas of every service."""
    two_replicas(stack)
    return stack


@pytest.fixture
async def metrics() -> AsyncIterator[httpx.AsyncClient]:
    """A client of the replicas' own metrics ports."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def test_load_spreads_across_replicas(
    replicated: Stack,
    web: httpx.AsyncClient,
    metrics: httpx.AsyncClient,
    tokens: Tokens,
    author: dict[str, object],
) -> None:
    handled = {"grpc_method": "ListAuthors"}
    before = {
        ("gateway", k): await counter(metrics, "gateway", k, "http_requests_total", **LISTS)
        for k in (0, 1)
    } | {
        ("authors", k): await counter(metrics, "authors", k, "grpc_server_handled_total", **handled)
        for k in (0, 1)
    }
    headers = await tokens.headers("admin")
    for _ in range(SPREAD_REQUESTS):
        listed = await web.get("/authors", params={"id": str(author["id"])}, headers=headers)
        assert listed.status_code == 200
    after = {
        ("gateway", k): await counter(metrics, "gateway", k, "http_requests_total", **LISTS)
        for k in (0, 1)
    } | {
        ("authors", k): await counter(metrics, "authors", k, "grpc_server_handled_total", **handled)
        for k in (0, 1)
    }
    grew = {replica: after[replica] - before[replica] for replica in before}
    # Each replica served a fair share (other tests' traffic only adds to it).
    assert all(n >= SPREAD_REQUESTS / 4 for n in grew.values()), grew


@pytest.fixture
async def prometheus(replicated: Stack) -> AsyncIterator[Prometheus]:
    """A client of the stack's Prometheus."""
    client = Prometheus(replicated.prometheus_url)
    yield client
    await client.close()


# One series of each job that test_load_spreads_across_replicas made sure of.
SERIES = {
    "gateway": (
        "http_requests_total",
        {"method": "GET", "endpoint": "/authors", "status_code": "200"},
    ),
    "authors": ("grpc_server_handled_total", {"grpc_method": "ListAuthors", "grpc_code": "OK"}),
}


@pytest.mark.parametrize("job", SERIES)
async def test_per_replica_series_stay_distinct_in_prometheus(
    prometheus: Prometheus, metrics: httpx.AsyncClient, job: str
) -> None:
    metric, labels = SERIES[job]
    selector = ",".join([f'job="{job}"', *(f'{k}="{v}"' for k, v in labels.items())])

    async def own_series() -> dict[str, float] | None:
        found = {
            s["metric"]["instance"]: float(s["value"][1])
            for s in await prometheus.query(f"{metric}{{{selector}}}")
        }
        own = {f"{job}-{k}": await counter(metrics, job, k, metric, **labels) for k in (0, 1)}
        # Each instance's series is that replica's own counter, scraped a moment ago (so
        # at most its value now), never the other's nor the sum of both. Right after a
        # restart the newest sample may still be the previous process's: look again.
        mine = all(0 < found.get(name, 0) <= own[name] for name in own)
        return found if mine else None

    scraped = await poll(own_series, SCRAPE_WITHIN_SECONDS, f"{job}-0 and {job}-1 series")
    assert len(scraped) == len(set(scraped))
    up = await prometheus.query(f'up{{job="{job}"}}')
    instances = [s["metric"]["instance"] for s in up]
    assert len(instances) == len(set(instances))
    assert {f"{job}-0", f"{job}-1"} <= set(instances)


@pytest.mark.parametrize(("listener", "changer"), [(0, 1), (1, 0)])
async def test_a_broadcast_crosses_replicas(
    replicated: Stack, tokens: Tokens, listener: int, changer: int
) -> None:
    async with (
        ws.session(http_url(listener), await tokens.get("viewer")) as subscriber,
        httpx.AsyncClient(base_url=http_url(changer), timeout=20) as other,
    ):
        assert (await subscriber.request(ws.SUBSCRIBE_AUTHORS))["status_code"] == ws.OK
        created = await other.post(
            "/authors",
            json={"name": f"e2e-cross-{uuid.uuid4()}"},
            headers=await tokens.headers("admin"),
        )
        assert created.status_code == 201, created.text
        author = created.json()
        heard = await subscriber.broadcast(ws.AUTHOR_CREATED, author["id"])
        assert heard["data"] == author
        await other.delete(f"/authors/{author['id']}", headers=await tokens.headers("admin"))


@dataclass
class Load:
    """Open-loop GETs through Traefik, each answer recorded (status, or the exception)."""

    web: httpx.AsyncClient
    headers: dict[str, str]
    path: str
    answers: list[int | str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            while not stop.is_set():
                group.create_task(self._one())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1 / LOAD_PER_SECOND)

    async def _one(self) -> None:
        try:
            response = await self.web.get(self.path, headers=self.headers)
            self.answers.append(response.status_code)
        except httpx.HTTPError as error:
            self.answers.append(type(error).__name__)


@dataclass
class Client:
    """A socket through Traefik that, when told 1001, reconnects (retrying while refused)."""

    url: str
    token: str
    closes: list[int] = field(default_factory=list)
    reconnected: asyncio.Event = field(default_factory=asyncio.Event)

    async def hold(self, connected: asyncio.Event) -> None:
        async with ws.session(self.url, self.token) as first:
            connected.set()
            await first.socket.wait_closed()
            self.closes.append(first.socket.close_code or 0)
        deadline = time.monotonic() + RECONNECT_WITHIN_SECONDS
        while True:
            try:
                async with ws.session(self.url, self.token) as again:
                    assert (await again.request(ws.GET_AUTHORS, {"id": 1}))["status_code"] == ws.OK
                    self.reconnected.set()
                    await again.socket.wait_closed()
                    self.closes.append(again.socket.close_code or 0)
                return
            except (InvalidStatus, ConnectionClosed, OSError):
                # The draining replica refuses upgrades (503) until it is gone.
                assert time.monotonic() < deadline, "no reconnect within the bound"
                await asyncio.sleep(0.2)


async def test_a_rolling_restart_of_a_gateway_replica_fails_no_request(
    replicated: Stack,
    web: httpx.AsyncClient,
    metrics: httpx.AsyncClient,
    tokens: Tokens,
    author: dict[str, object],
) -> None:
    token = await tokens.get("admin")
    clients = [Client(replicated.web_url, token) for _ in range(SOCKETS)]
    connected = [asyncio.Event() for _ in clients]
    holders = [asyncio.create_task(c.hold(e)) for c, e in zip(clients, connected, strict=True)]
    load = Load(web, await tokens.headers("admin"), f"/authors/{author['id']}")
    stop = asyncio.Event()
    loader = asyncio.create_task(load.run(stop))
    try:
        async with asyncio.timeout(RESTART_WITHIN_SECONDS):
            await asyncio.gather(*(e.wait() for e in connected))
            on_victim = await counter(metrics, "gateway", 1, "ws_connections_active")
            assert on_victim >= 1, "no socket of this test reached gateway-1"
            reaccepted = await counter(
                metrics, "gateway", 0, "ws_connections_total", status="authenticated"
            )
            await asyncio.to_thread(replicated.stop, "gateway-1")
            dropped = [c for c in clients if c.closes]
            assert dropped, "gateway-1's sockets were not closed"
            await asyncio.gather(*(c.reconnected.wait() for c in dropped))
            # Every dropped socket came back through Traefik to the replica still running.
            now = await counter(
                metrics, "gateway", 0, "ws_connections_total", status="authenticated"
            )
            assert now - reaccepted >= len(dropped)
            await asyncio.to_thread(replicated.start, "gateway-1")

            async def back_in_rotation() -> bool | None:
                # The new process counts from zero; Traefik's health checks do not count.
                try:
                    served = await counter(metrics, "gateway", 1, "http_requests_total", **READS)
                except httpx.TransportError:
                    return None
                return served > 0 or None

            await poll(back_in_rotation, RESTART_WITHIN_SECONDS, "gateway-1 serving again")
    finally:
        stop.set()
        await loader
        for holder in holders:
            holder.cancel()
        ended = await asyncio.gather(*holders, return_exceptions=True)
    assert not [e for e in ended if isinstance(e, Exception)], ended
    assert {c.closes[0] for c in dropped} == {GOING_AWAY}
    # Sockets on the other replica were never disturbed.
    assert all(not c.closes for c in clients if c not in dropped)
    failed = [a for a in load.answers if a != 200]
    assert not failed, f"{len(failed)} of {len(load.answers)} requests failed: {failed[:10]}"
    assert len(load.answers) >= 2 * LOAD_PER_SECOND
