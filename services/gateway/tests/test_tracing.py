"""The gateway's part of tracing (docs/tracing.md): a sampled request is a server span of
the caller's trace, named by its route, on the fast path and through FastAPI alike, with
its gRPC calls and the services' handling below it; an unsampled one makes no span; the
latency histogram carries a sampled request's trace id as an exemplar. Spans are kept in
memory instead of exported; the services are real, in this process."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.exposition import generate_latest

from gatehouse_kit import tracing
from services.gateway.tests.tokens import Realm


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The kit's tracer as the gateway has it (the edge; no request here is sampled but
    by its traceparent), into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = tracing._tracer, tracing._edge
    tracing._tracer, tracing._edge = provider.get_tracer("test"), True
    yield exporter
    tracing._tracer, tracing._edge = saved


def _traceparent(sampled: bool) -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-{'01' if sampled else '00'}"


async def _of_trace(
    exporter: InMemorySpanExporter, trace_id: str, count: int
) -> list[ReadableSpan]:
    """The finished spans of `trace_id`, once there are `count` (a server ends its span just
    after its answer went out)."""
    for _ in range(500):
        found = [
            s
            for s in exporter.get_finished_spans()
            if s.context is not None and f"{s.context.trace_id:032x}" == trace_id
        ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(found)} spans of {trace_id}, not {count}")


async def test_a_sampled_request_is_a_span_of_its_route_with_its_calls_below(
    spans: InMemorySpanExporter, gateway: httpx.AsyncClient, realm: Realm
) -> None:
    editor = {"Authorization": f"Bearer {realm.token('editor')}"}
    created = await gateway.post(
        "/authors", json={"name": f"traced {uuid.uuid4()}"}, headers=editor
    )
    assert created.status_code == 201
    author_id = created.json()["id"]

    # The fast path (a cache hit: no call).
    trace_id, parent = _traceparent(sampled=True)
    read = await gateway.get(f"/authors/{author_id}", headers={**editor, "traceparent": parent})
    assert read.status_code == 200
    (request,) = await _of_trace(spans, trace_id, 1)
    assert request.name == "GET /authors/{id}"
    assert request.kind == SpanKind.SERVER
    assert request.parent is not None
    assert f"{request.parent.span_id:016x}" == parent.split("-")[2]
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/authors/{id}"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["url.path"] == f"/authors/{author_id}"
    exposition = generate_latest(REGISTRY).decode()  # type: ignore[no-untyped-call]
    assert any(
        line.startswith("http_request_duration_seconds_bucket") and trace_id in line
        for line in exposition.splitlines()
    )

    # Through FastAPI, with a call to the authors service: gateway request -> client
    # call -> the service's handler, one trace.
    trace_id, parent = _traceparent(sampled=True)
    listed = await gateway.get("/authors", headers={**editor, "traceparent": parent})
    assert listed.status_code == 200
    found = await _of_trace(spans, trace_id, 3)
    by_kind = {(s.kind, s.name.split("/")[0]): s for s in found}
    request = by_kind[SpanKind.SERVER, "GET "]
    assert request.name == "GET /authors"
    call = next(s for s in found if s.kind == SpanKind.CLIENT)
    handled = next(s for s in found if s.name.startswith("gatehouse.authors.v1."))
    assert call.name == "authors/ListAuthors"
    assert call.parent is not None
    assert request.context is not None
    assert call.parent.span_id == request.context.span_id
    assert handled.parent is not None
    assert call.context is not None
    assert handled.parent.span_id == call.context.span_id


async def test_an_unsampled_request_makes_no_span(
    spans: InMemorySpanExporter, gateway: httpx.AsyncClient, realm: Realm
) -> None:
    viewer = {"Authorization": f"Bearer {realm.token('viewer')}"}
    trace_id, parent = _traceparent(sampled=False)
    listed = await gateway.get("/authors", headers={**viewer, "traceparent": parent})
    assert listed.status_code == 200
    # Nor does the service it called, which got the decision with the call; a sampled
    # request after it is traced, so nothing was merely late.
    sampled_id, sampled = _traceparent(sampled=True)
    await gateway.get("/authors", headers={**viewer, "traceparent": sampled})
    await _of_trace(spans, sampled_id, 3)
    assert not [
        s
        for s in spans.get_finished_spans()
        if s.context and f"{s.context.trace_id:032x}" == trace_id
    ]


async def test_fastapi_makes_no_span_of_its_own(
    spans: InMemorySpanExporter,
    gateway: httpx.AsyncClient,
    realm: Realm,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FastAPI traces by itself whenever a tracer provider is set (as the gateway's process
    sets one): the edge's span is the request's only one."""
    global_spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(global_spans))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    trace_id, parent = _traceparent(sampled=True)
    viewer = {"Authorization": f"Bearer {realm.token('viewer')}", "traceparent": parent}
    assert (await gateway.get("/authors", headers=viewer)).status_code == 200
    await _of_trace(spans, trace_id, 3)
    assert global_spans.get_finished_spans() == ()
