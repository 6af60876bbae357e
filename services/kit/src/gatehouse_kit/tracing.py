"""Distributed tracing: the W3C trace context across every hop, spans to an OTLP collector.

Sampling is decided once, at the edge: Traefik samples `TRACING_SAMPLE_RATIO` of the
requests that arrive without a trace context and sends every request on with a
`traceparent` header whose sampled flag carries its decision; every process after it
follows that flag (the SDK's parent-based sampler). Only the gateway (`edge=True`) also
decides for a request that reached it without a `traceparent` (one sent to its port
directly), at the same ratio; the gRPC services never start a trace of their own.

The unsampled path is nearly free: a request whose `traceparent` says "not sampled"
creates no span at all; its `traceparent` is only kept in `traceparent_var`, where the
log lines read its trace id and the gRPC calls made for it (`gatehouse_kit.grpc_client.unary`)
forward it as it came. A sampled request gets a span of its process (`traced`), the
current OpenTelemetry context for its PostgreSQL and Redis calls (the asyncpg and
redis instrumentations), a client span for each gRPC call it makes, and the trace id as
an exemplar on the latency histograms it is observed in (`exemplar`).
"""

from __future__ import annotations

import atexit
import re
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import AttributeValue
from prometheus_client import Counter

from gatehouse_kit.settings import ServiceSettings

TRACEPARENT_KEY = "traceparent"

SPANS_EXPORTED = Counter(
    "tracing_spans_exported_total",
    "Spans handed to the trace collector, by outcome: ok; failed (the collector refused "
    "them or did not answer); queue_full (ended while the export queue was full: one span "
    "is dropped for it). Spans failed and queue_full are lost.",
    ["outcome"],
)
for _outcome in ("ok", "failed", "queue_full"):
    SPANS_EXPORTED.labels(_outcome)

# The W3C traceparent of the request being served: as it came, or of this process's
# span when the request is sampled (the parent of what the request calls).
traceparent_var: ContextVar[str | None] = ContextVar("traceparent", default=None)

# Version 00; other versions are read by their first four fields, as the W3C
# specification asks of a parser of version 00.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

Instrumented = Literal["asyncpg", "redis"]

_tracer: trace.Tracer | None = None
# OpenTelemetry's own key that every instrumentation checks before making a span.
_SUPPRESSED = otel_context._SUPPRESS_INSTRUMENTATION_KEY
# Whether this process decides for a request that came without a trace context.
_edge = False


def valid_traceparent(value: str | None) -> str | None:
    """`value` when it is a W3C traceparent that may be continued, else None."""
    if not value:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, _, rest = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if version == "00" and rest:
        return None
    return value if version == "00" else f"00{value[2:55]}"


def sampled(traceparent: str) -> bool:
    """Whether a valid traceparent carries the sampled flag."""
    return bool(int(traceparent[53:55], 16) & 1)


def trace_id_of(traceparent: str) -> str:
    """The trace id (32 hex digits) of a valid traceparent."""
    return traceparent[3:35]


def current_trace_id() -> str | None:
    """The trace id of the request being served, if it came with or got a trace context."""
    traceparent = traceparent_var.get()
    return traceparent[3:35] if traceparent is not None else None


def exemplar() -> dict[str, str] | None:
    """`{"trace_id": ...}` for a histogram observation of a sampled request, else None:
    an exemplar only ever points at a trace that the backend has."""
    traceparent = traceparent_var.get()
    if traceparent is None or _tracer is None or not sampled(traceparent):
        return None
    return {"trace_id": traceparent[3:35]}


def _format(span_context: SpanContext) -> str:
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )


def _parent_context(traceparent: str) -> otel_context.Context:
    span_context = SpanContext(
        trace_id=int(traceparent[3:35], 16),
        span_id=int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(traceparent[53:55], 16)),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


class traced:
    """One request served by this process, from its incoming `traceparent` (or None).

    Binds `traceparent_var` for the request. When tracing is on and the request is
    sampled (its flag, or, at the edge, the ratio for a request without one), starts a
    span of `kind` that is current for what the request calls, and yields it; else
    yields None and creates nothing.
    """

    __slots__ = ("_attributes", "_context_token", "_kind", "_name", "_parent", "_span", "_token")

    def __init__(
        self,
        traceparent: str | None,
        name: str,
        kind: SpanKind = SpanKind.SERVER,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        self._parent = valid_traceparent(traceparent)
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._token: Token[str | None] | None = None
        self._context_token: Token[otel_context.Context] | None = None
        self._span: Span | None = None

    @property
    def span(self) -> Span | None:
        """The request's span, while it is sampled and open."""
        return self._span

    def __enter__(self) -> Span | None:
        parent = self._parent
        tracer = _tracer
        if parent is None:
            if tracer is None or not _edge:
                return None
        elif tracer is None or not sampled(parent):
            self._token = traceparent_var.set(parent)
            return None
        span = tracer.start_span(
            self._name,
            context=_parent_context(parent) if parent is not None else None,
            kind=self._kind,
            attributes=self._attributes,
        )
        self._token = traceparent_var.set(_format(span.get_span_context()))
        if not span.is_recording():
            # The edge decided against it: what follows inherits the decision.
            return None
        self._span = span
        # The instrumented libraries trace what this request calls (configure_tracing
        # suppresses them outside a sampled request).
        self._context_token = otel_context.attach(
            trace.set_span_in_context(span, otel_context.set_value(_SUPPRESSED, False))
        )
        return span

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        if self._span is not None:
            if error is not None and not isinstance(error, GeneratorExit):
                self._span.record_exception(error)
                self._span.set_status(trace.StatusCode.ERROR)
            self._span.end()
            assert self._context_token is not None
            otel_context.detach(self._context_token)
        if self._token is not None:
            traceparent_var.reset(self._token)


def client_span(name: str) -> Span | None:
    """A client span for a call made for a sampled request (current and with the
    request's span as its parent), or None when the request is not sampled."""
    traceparent = traceparent_var.get()
    if _tracer is None or traceparent is None or not sampled(traceparent):
        return None
    return _tracer.start_span(name, kind=SpanKind.CLIENT)


def traceparent_of(span: Span) -> str:
    """The traceparent that makes `span` the parent of the callee's spans."""
    return _format(span.get_span_context())


class _CountedExporter(SpanExporter):
    """An exporter whose every batch is counted in `tracing_spans_exported_total`."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        outcome = "ok" if result is SpanExportResult.SUCCESS else "failed"
        SPANS_EXPORTED.labels(outcome).inc(len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _CountedBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting what it drops when its queue is full (it makes
    room by dropping the oldest span, and only logs it)."""

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._batch_processor._queue
        if len(queue) == queue.maxlen:
            SPANS_EXPORTED.labels("queue_full").inc()
        super().on_end(span)


def configure_tracing(
    service: str,
    settings: ServiceSettings,
    *,
    edge: bool = False,
    instrument: Iterable[Instrumented] = (),
) -> None:
    """Export this process's spans over OTLP/gRPC to `TRACING_OTLP_ENDPOINT`, in batches;
    instrument the client libraries named in `instrument`. `TRACING_ENABLED=false`: no
    span is made, and requests' trace contexts are still carried on and logged."""
    global _tracer, _edge
    _edge = edge
    if not settings.tracing_enabled:
        _tracer = None
        return
    # Imported here: the exporter pulls in protobuf and grpc modules a disabled process
    # does not need.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "gatehouse"}),
        sampler=ParentBased(
            TraceIdRatioBased(settings.tracing_sample_ratio) if edge else ALWAYS_OFF
        ),
    )
    provider.add_span_processor(
        _CountedBatchSpanProcessor(
            _CountedExporter(
                OTLPSpanExporter(
                    endpoint=settings.tracing_otlp_endpoint,
                    # http:// is plaintext (the collector on loopback or a private
                    # network); https:// is TLS with the system's certificate authorities.
                    insecure=settings.tracing_otlp_endpoint.startswith("http://"),
                )
            )
        )
    )
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)
    # The instrumented libraries (asyncpg, redis) make no span but for a sampled request
    # (`traced` lifts this for it): an unsampled request's calls, and work outside any
    # request, pass through them at the cost of one context lookup instead of a span
    # object each. Set before the event loop starts, every task inherits it.
    otel_context.attach(otel_context.set_value(_SUPPRESSED, True))
    for library in instrument:
        if library == "asyncpg":
            from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

            AsyncPGInstrumentor().instrument(  # type: ignore[no-untyped-call]
                tracer_provider=provider
            )
        else:
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            RedisInstrumentor().instrument(tracer_provider=provider)
    _tracer = provider.get_tracer("gatehouse_kit")
