"""Cache-miss reads gathered into BatchGetAuthors calls: unit tests on a stand-in upstream,
then through the gateway against the real authors service."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY

from gatehouse_gateway.author_batches import MAX_BATCH, AuthorBatches
from gatehouse_gateway.errors import ApiError, ErrorCode, service_unavailable
from gatehouse_kit.logging import request_id_var
from gatehouse_protos.authors.v1 import authors_pb2
from services.gateway.tests.conftest import Upstreams, gateway_settings, running_gateway
from services.gateway.tests.test_http import bearer
from services.gateway.tests.tokens import Realm
from tests.harness.backends import Backend


class _Upstream:
    """Answers each call after `delay` with the requested ids it knows, recording calls."""

    def __init__(self, known: set[int], delay: float = 0.01) -> None:
        self.known = known
        self.delay = delay
        self.calls: list[authors_pb2.BatchGetAuthorsRequest] = []
        self.request_ids: list[str | None] = []
        self.error: Exception | None = None

    async def call(self, rpc: Any, request: authors_pb2.BatchGetAuthorsRequest) -> Any:
        self.calls.append(request)
        self.request_ids.append(request_id_var.get())
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        reply = authors_pb2.BatchGetAuthorsResponse()
        for lookup in request.lookups:
            if lookup.id in self.known:
                reply.authors.add(id=lookup.id, name=f"author {lookup.id}")
        return reply


def _batches(upstream: _Upstream) -> AuthorBatches:
    return AuthorBatches(upstream, rpc=None)  # type: ignore[arg-type]


async def _get(batches: AuthorBatches, author_id: int, request_id: str) -> Any:
    request_id_var.set(request_id)
    return await batches.get(author_id)


async def test_reads_of_one_turn_share_a_call_and_each_gets_its_author() -> None:
    upstream = _Upstream({1, 2, 3})
    batches = _batches(upstream)
    authors = await asyncio.gather(*(_get(batches, i, f"req-{i}") for i in (1, 2, 3)))
    assert [a.name for a in authors] == ["author 1", "author 2", "author 3"]
    assert len(upstream.calls) == 1
    lookups = [(lookup.id, lookup.request_id) for lookup in upstream.calls[0].lookups]
    assert lookups == [(1, "req-1"), (2, "req-2"), (3, "req-3")]
    # The call itself goes under the first read's request id.
    assert upstream.request_ids == ["req-1"]


async def test_reads_arriving_during_a_call_go_together_in_the_next() -> None:
    upstream = _Upstream(set(range(1, 10)), delay=0.05)
    batches = _batches(upstream)
    first = asyncio.ensure_future(_get(batches, 1, "a"))
    await asyncio.sleep(0.01)  # the first call is under way
    later = [asyncio.ensure_future(_get(batches, i, f"r{i}")) for i in range(2, 10)]
    await asyncio.gather(first, *later)
    assert [len(call.lookups) for call in upstream.calls] == [1, 8]


async def test_a_missing_author_is_a_404_and_does_not_fail_the_others() -> None:
    upstream = _Upstream({1})
    batches = _batches(upstream)
    results: tuple[Any, ...] = await asyncio.gather(
        _get(batches, 1, "a"), _get(batches, 7, "b"), return_exceptions=True
    )
    found, missing = results
    assert found.id == 1
    assert isinstance(missing, ApiError)
    assert (missing.status, missing.code, missing.msg) == (
        404,
        ErrorCode.NOT_FOUND,
        "author 7 not found",
    )


async def test_a_failed_call_fails_each_of_its_reads_with_the_same_error() -> None:
    upstream = _Upstream({1, 2})
    upstream.error = service_unavailable("authors")
    batches = _batches(upstream)
    results = await asyncio.gather(
        _get(batches, 1, "a"), _get(batches, 2, "b"), return_exceptions=True
    )
    assert [type(r) for r in results] == [ApiError, ApiError]
    assert {r.status for r in results if isinstance(r, ApiError)} == {503}
    assert results[0] is not results[1]
    # The next read starts a new call, which succeeds.
    upstream.error = None
    assert (await _get(batches, 2, "c")).id == 2


async def test_an_unexpected_failure_reaches_every_read_of_its_call() -> None:
    upstream = _Upstream({1, 2})
    upstream.error = RuntimeError("broken")
    batches = _batches(upstream)
    results = await asyncio.gather(
        _get(batches, 1, "a"), _get(batches, 2, "b"), return_exceptions=True
    )
    assert [str(r) for r in results] == ["broken", "broken"]


async def test_a_batch_holds_at_most_max_batch_reads() -> None:
    upstream = _Upstream(set(range(1, MAX_BATCH + 51)))
    batches = _batches(upstream)
    await asyncio.gather(*(_get(batches, i, f"r{i}") for i in range(1, MAX_BATCH + 51)))
    assert [len(call.lookups) for call in upstream.calls] == [MAX_BATCH, 50]


async def test_a_read_cancelled_while_waiting_is_left_out_of_its_call() -> None:
    upstream = _Upstream({1, 2, 3}, delay=0.05)
    batches = _batches(upstream)
    first = asyncio.ensure_future(_get(batches, 1, "a"))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(_get(batches, 2, "b"))
    kept = asyncio.ensure_future(_get(batches, 3, "c"))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await first).id == 1
    assert (await kept).id == 3
    assert [[lookup.id for lookup in call.lookups] for call in upstream.calls] == [[1], [3]]


async def test_cancelling_the_sender_cancels_every_waiting_read() -> None:
    upstream = _Upstream({1, 2}, delay=10)
    batches = _batches(upstream)
    reads = [asyncio.ensure_future(_get(batches, i, "r")) for i in (1, 2)]
    await asyncio.sleep(0.01)
    later = asyncio.ensure_future(_get(batches, 2, "s"))
    await asyncio.sleep(0)
    assert batches._sender is not None
    batches._sender.cancel()
    results = await asyncio.gather(*reads, later, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


def _batch_calls() -> float:
    labels = {"service": "authors", "method": "BatchGetAuthors", "code": "OK"}
    return REGISTRY.get_sample_value("upstream_requests_total", labels) or 0.0


async def test_concurrent_misses_through_the_gateway_share_calls(
    upstreams: Upstreams, redis_server: Backend, realm: Realm
) -> None:
    # The cache off: every read is a miss.
    settings = gateway_settings(upstreams, redis_server.url, author_cache_max_entries=0)
    async with running_gateway(settings, realm) as (_, gateway):
        editor = bearer(realm, "editor")
        created = [
            (await gateway.post("/authors", json={"name": f"batched {i}"}, headers=editor)).json()
            for i in range(20)
        ]
        missing = created[-1]["id"] + 1000
        before = _batch_calls()
        viewer = bearer(realm, "viewer")
        ids = [author["id"] for author in created] + [missing]
        answers = await asyncio.gather(*(gateway.get(f"/authors/{i}", headers=viewer) for i in ids))
    assert [r.json() for r in answers[:-1]] == created
    assert answers[-1].status_code == 404
    assert answers[-1].json()["error"]["msg"] == f"author {missing} not found"
    assert 0 < _batch_calls() - before < len(ids)
