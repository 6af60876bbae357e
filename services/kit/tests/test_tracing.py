"""The kit's tracing: traceparent parsing, the unsampled path (no span, context carried on),
the sampled path (server and client spans, exemplars), and the trace id in log lines;
over a real gRPC server on loopback, spans kept in memory instead of exported."""

from __future__ import annotations

import asyncio
import atexit
import io
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import grpc
import pytest
import structlog
from google.protobuf import timestamp_pb2
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.exposition import generate_latest

from gatehouse_kit import tracing
from gatehouse_kit.grpc_client import open_channel, unary
from gatehouse_kit.grpc_server import GrpcService
from gatehouse_kit.logging import configure_logging
from gatehouse_kit.settings import ServiceSettings
from gatehouse_kit.tracing import (
    _CountedBatchSpanProcessor,
    _CountedExporter,
    configure_tracing,
    current_trace_id,
    exemplar,
    traced,
    traceparent_var,
    valid_traceparent,
)
from gatehouse_protos.authors.v1 import authors_pb2, authors_pb2_grpc

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLED = f"00-{TRACE}-00f067aa0ba902b7-01"
UNSAMPLED = f"00-{TRACE}-00f067aa0ba902b7-00"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (SAMPLED, SAMPLED),
        (UNSAMPLED, UNSAMPLED),
        (None, None),
        ("", None),
        ("garbage", None),
        (SAMPLED.upper(), None),  # lower-case hex only
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),  # all-zero trace id
        (f"00-{TRACE}-{'0' * 16}-01", None),  # all-zero parent id
        (f"ff-{TRACE}-00f067aa0ba902b7-01", None),  # forbidden version
        (f"{SAMPLED}-extra", None),  # version 00 has exactly four fields
        (f"01-{TRACE}-00f067aa0ba902b7-01-future", SAMPLED),  # a later version, read as 00
    ],
)
def test_valid_traceparent(value: str | None, expected: str | None) -> None:
    assert valid_traceparent(value) == expected


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The kit's tracer, as configure_tracing makes it for a gRPC service, into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = tracing._tracer, tracing._edge
    tracing._tracer, tracing._edge = provider.get_tracer("test"), False
    yield exporter
    tracing._tracer, tracing._edge = saved


def test_an_unsampled_request_makes_no_span_and_keeps_its_context(
    spans: InMemorySpanExporter,
) -> None:
    with traced(UNSAMPLED, "call") as span:
        assert span is None
        assert traceparent_var.get() == UNSAMPLED
        assert current_trace_id() == TRACE
        assert exemplar() is None
    assert traceparent_var.get() is None
    assert spans.get_finished_spans() == ()


def test_a_sampled_request_gets_a_span_of_its_trace(spans: InMemorySpanExporter) -> None:
    with traced(SAMPLED, "call", attributes={"a": 1}) as span:
        assert span is not None
        # What the request calls has this span as parent.
        current = traceparent_var.get()
        assert current is not None
        assert current.startswith(f"00-{TRACE}-")
        assert current != SAMPLED
        assert tracing.sampled(current)
        assert exemplar() == {"trace_id": TRACE}
    (finished,) = spans.get_finished_spans()
    assert finished.name == "call"
    assert format(finished.context.trace_id, "032x") == TRACE
    assert finished.parent is not None
    assert format(finished.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert finished.attributes == {"a": 1}


def test_a_failed_request_span_records_the_error(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="boom"), traced(SAMPLED, "call"):
        raise ValueError("boom")
    (finished,) = spans.get_finished_spans()
    assert not finished.status.is_ok
    assert finished.events[0].name == "exception"


def test_a_service_starts_no_trace_of_its_own(spans: InMemorySpanExporter) -> None:
    with traced(None, "call") as span:
        assert span is None
        assert traceparent_var.get() is None
    with traced("not a traceparent", "call") as span:
        assert span is None
        assert traceparent_var.get() is None
    assert spans.get_finished_spans() == ()


def test_the_edge_decides_for_a_request_without_a_trace_context() -> None:
    exporter = InMemorySpanExporter()
    saved = tracing._tracer, tracing._edge
    try:
        tracing._edge = True
        for ratio, recorded in ((1.0, 1), (0.0, 0)):
            exporter.clear()
            provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            tracing._tracer = provider.get_tracer("test")
            with traced(None, "edge") as span:
                assert (span is not None) == bool(recorded)
                # Either way the decision travels on, and the log lines have a trace id.
                current = traceparent_var.get()
                assert current is not None
                assert tracing.sampled(current) == bool(recorded)
            assert len(exporter.get_finished_spans()) == recorded
    finally:
        tracing._tracer, tracing._edge = saved


def test_disabled_tracing_still_carries_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACING_ENABLED", "false")
    saved = tracing._tracer, tracing._edge
    try:
        configure_tracing("off", ServiceSettings())
        assert tracing._tracer is None
        with traced(SAMPLED, "call") as span:
            assert span is None
            assert traceparent_var.get() == SAMPLED
            assert exemplar() is None  # no span exported: no exemplar to point at
    finally:
        tracing._tracer, tracing._edge = saved


def test_every_log_line_of_a_request_carries_its_trace_id() -> None:
    out = io.StringIO()
    configure_logging("test", stream=out)
    log = structlog.get_logger("test")
    with traced(UNSAMPLED, "call"):
        log.info("inside")
    log.info("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["trace_id"] == TRACE
    assert "trace_id" not in outside


class Authors(authors_pb2_grpc.AuthorsServiceServicer):
    """GetAuthor that remembers the trace context it was called in."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        self.metadata: list[dict[str, Any]] = []

    async def GetAuthor(
        self, request: authors_pb2.GetAuthorRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> authors_pb2.Author:
        self.seen.append(traceparent_var.get())
        self.metadata.append(dict(context.invocation_metadata() or ()))
        if request.id == 404:
            await context.abort(grpc.StatusCode.NOT_FOUND, "missing")
        return authors_pb2.Author(id=request.id, name="Ada", created_at=timestamp_pb2.Timestamp())


@pytest.fixture
async def authors() -> AsyncIterator[tuple[Authors, authors_pb2_grpc.AuthorsServiceAsyncStub]]:
    servicer = Authors()  # type: ignore[abstract]  # only GetAuthor is served

    def register(server: grpc.aio.Server) -> list[str]:
        authors_pb2_grpc.add_AuthorsServiceServicer_to_server(servicer, server)
        return ["gatehouse.authors.v1.AuthorsService"]

    service = GrpcService(register, host="127.0.0.1", port=0, grace_seconds=1)
    await service.start()
    channel = open_channel(f"127.0.0.1:{service.port}")
    yield servicer, authors_pb2_grpc.AuthorsServiceStub(channel)
    await channel.close()
    await service.stop()


async def _get(stub: authors_pb2_grpc.AuthorsServiceAsyncStub, author_id: int) -> Any:
    return await unary(
        stub.GetAuthor,
        authors_pb2.GetAuthorRequest(id=author_id),
        service="authors",
        method="GetAuthor",
        deadline=5,
    )


async def test_an_unsampled_call_forwards_the_traceparent_as_it_came(
    spans: InMemorySpanExporter, authors: tuple[Authors, authors_pb2_grpc.AuthorsServiceAsyncStub]
) -> None:
    servicer, stub = authors
    with traced(UNSAMPLED, "request"):
        await _get(stub, 1)
    assert servicer.metadata[0]["traceparent"] == UNSAMPLED
    assert servicer.seen == [UNSAMPLED]
    assert spans.get_finished_spans() == ()


async def test_a_call_without_a_trace_context_sends_none(
    spans: InMemorySpanExporter, authors: tuple[Authors, authors_pb2_grpc.AuthorsServiceAsyncStub]
) -> None:
    servicer, stub = authors
    await _get(stub, 1)
    assert "traceparent" not in servicer.metadata[0]
    assert servicer.seen == [None]


async def test_a_sampled_call_is_a_client_span_and_a_server_span_of_one_trace(
    spans: InMemorySpanExporter, authors: tuple[Authors, authors_pb2_grpc.AuthorsServiceAsyncStub]
) -> None:
    servicer, stub = authors
    with traced(SAMPLED, "request"):
        await _get(stub, 1)
        with pytest.raises(grpc.aio.AioRpcError):
            await _get(stub, 404)
    # The server ends its span just after the status went out: the caller may have it first.
    for _ in range(500):
        if len(spans.get_finished_spans()) == 5:
            break
        await asyncio.sleep(0.01)
    finished = {(s.name, s.kind): s for s in spans.get_finished_spans()}
    request = finished["request", SpanKind.SERVER]
    client = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    server = [
        s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER and s is not request
    ]
    assert len(client) == 2
    assert len(server) == 2
    for span in (*client, *server):
        assert format(span.context.trace_id, "032x") == TRACE
    # request -> client call -> server handler
    for call, handled in zip(client, server, strict=True):
        assert call.parent is not None
        assert call.parent.span_id == request.context.span_id
        assert handled.parent is not None
        assert handled.parent.span_id == call.context.span_id
    assert server[0].attributes is not None
    assert server[0].attributes["rpc.grpc.status_code"] == 0
    assert server[1].attributes is not None
    assert server[1].attributes["rpc.grpc.status_code"] == 5
    assert not server[1].status.is_ok
    assert not client[1].status.is_ok
    # The handler saw its own span's context, which its own calls would carry on.
    assert servicer.seen[0] is not None
    assert servicer.seen[0].startswith(f"00-{TRACE}-{server[0].context.span_id:016x}-")
    # The latency histograms carry the trace id as an exemplar (OpenMetrics).
    exposition = generate_latest(REGISTRY).decode()  # type: ignore[no-untyped-call]
    assert f'# {{trace_id="{TRACE}"}}' in exposition
    assert any(
        line.startswith("grpc_server_handling_seconds_bucket") and TRACE in line
        for line in exposition.splitlines()
    )
    assert any(
        line.startswith("upstream_request_duration_seconds_bucket") and TRACE in line
        for line in exposition.splitlines()
    )


class _Collector(SpanExporter):
    """A collector that answers each batch with the next of `results`."""

    def __init__(self, *results: SpanExportResult) -> None:
        self._results = list(results)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._results.pop(0)


def count(outcome: str) -> float:
    """tracing_spans_exported_total of `outcome` so far."""
    value = REGISTRY.get_sample_value("tracing_spans_exported_total", {"outcome": outcome})
    return value or 0.0


def test_every_exported_span_is_counted_and_every_dropped_one_too() -> None:
    before = count("ok"), count("failed")
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(
            _CountedExporter(_Collector(SpanExportResult.SUCCESS, SpanExportResult.FAILURE))
        )
    )
    tracer = provider.get_tracer("test")
    tracer.start_span("kept").end()
    tracer.start_span("lost").end()
    assert (count("ok") - before[0], count("failed") - before[1]) == (1.0, 1.0)


class _StalledCollector(SpanExporter):
    """A collector that does not answer until `answer` is set."""

    def __init__(self) -> None:
        self.answer = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.answer.wait(10)
        return SpanExportResult.SUCCESS


def test_spans_dropped_from_a_full_export_queue_are_counted() -> None:
    before = count("queue_full"), count("ok")
    collector = _StalledCollector()
    processor = _CountedBatchSpanProcessor(
        _CountedExporter(collector),
        max_queue_size=4,
        max_export_batch_size=1,
        schedule_delay_millis=10,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    # The first span leaves the queue for the stalled export; four more fill the queue.
    tracer.start_span("exporting").end()
    deadline = time.monotonic() + 5
    while processor._batch_processor._queue and time.monotonic() < deadline:
        time.sleep(0.01)
    for k in range(4):
        tracer.start_span(f"queued-{k}").end()
    assert count("queue_full") == before[0]
    # Three more while it is full: each drops one.
    for k in range(3):
        tracer.start_span(f"over-{k}").end()
    assert count("queue_full") - before[0] == 3.0
    collector.answer.set()
    provider.shutdown()
    # What stayed queued was exported: the stalled span and the four still in the queue.
    assert count("ok") - before[1] == 5.0


def test_instrumented_libraries_trace_only_inside_a_sampled_request(
    spans: InMemorySpanExporter,
) -> None:
    # As configure_tracing leaves the process: instrumentation suppressed by default.
    token = otel_context.attach(otel_context.set_value(tracing._SUPPRESSED, True))
    try:
        assert not is_instrumentation_enabled()
        with traced(UNSAMPLED, "unsampled"):
            assert not is_instrumentation_enabled()
        with traced(SAMPLED, "sampled"):
            assert is_instrumentation_enabled()
        assert not is_instrumentation_enabled()
    finally:
        otel_context.detach(token)


@pytest.mark.parametrize(
    ("endpoint", "edge", "insecure", "root"),
    [
        ("http://127.0.0.1:4317", True, True, "TraceIdRatioBased"),
        ("https://collector.example:4317", False, False, "StaticSampler"),
    ],
)
def test_configure_tracing_exports_over_otlp_and_samples_only_at_the_edge(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, edge: bool, insecure: bool, root: str
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc import trace_exporter

    made: list[dict[str, object]] = []
    providers: list[TracerProvider] = []
    attached: list[object] = []

    class Exporter(_Collector):
        def __init__(self, **options: object) -> None:
            made.append(options)
            super().__init__()

    monkeypatch.setattr(trace_exporter, "OTLPSpanExporter", Exporter)
    monkeypatch.setattr(trace, "set_tracer_provider", providers.append)
    monkeypatch.setattr(otel_context, "attach", attached.append)
    monkeypatch.setattr(atexit, "register", lambda _: None)
    monkeypatch.setenv("TRACING_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("TRACING_SAMPLE_RATIO", "0.25")
    saved = tracing._tracer, tracing._edge
    try:
        configure_tracing("test", ServiceSettings(), edge=edge)
        assert tracing._tracer is not None
        assert tracing._edge is edge
    finally:
        tracing._tracer, tracing._edge = saved
    assert made == [{"endpoint": endpoint, "insecure": insecure}]
    (provider,) = providers
    assert provider.resource.attributes["service.name"] == "test"
    # Parent-based everywhere; only the edge samples a request that has no parent.
    assert type(provider.sampler).__name__ == "ParentBased"
    assert type(provider.sampler._root).__name__ == root  # type: ignore[attr-defined]
    # Instrumentation suppressed for the process until a sampled request lifts it.
    (suppressed,) = attached
    assert otel_context.get_value(tracing._SUPPRESSED, suppressed) is True  # type: ignore[arg-type]
