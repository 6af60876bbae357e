"""A grpc.aio server bootstrap: health, reflection, interceptors, graceful shutdown.

Every service builds its server with `GrpcService` so that each one exposes the same
health protocol, metrics, request-id propagation, error mapping and SIGTERM handling.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from opentelemetry.trace import StatusCode
from prometheus_client import Counter, Histogram

from gatehouse_kit.errors import InvalidArgument, ServiceError
from gatehouse_kit.logging import request_id_var, sane_request_id
from gatehouse_kit.tracing import TRACEPARENT_KEY, exemplar, traced

log = structlog.get_logger(__name__)

GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "gRPC calls completed by the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time the server spent on a gRPC call.",
    ["grpc_service", "grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

REQUEST_ID_KEY = "x-request-id"

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
    MethodHandler = grpc.RpcMethodHandler[Any, Any]


def _split_method(full_method: str) -> tuple[str, str]:
    _, service, method = full_method.split("/", 2)
    return service, method


async def _abort_for(error: BaseException, context: Context) -> None:
    if isinstance(error, ServiceError):
        await context.abort_with_status(rpc_status.to_status(error.to_status()))
    log.error("unhandled error in grpc handler", exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class _Undecodable:
    """What the request deserializer yields for bytes that are not a valid message."""

    __slots__ = ()


_UNDECODABLE = _Undecodable()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Wrap a deserializer so that bad bytes reach the handler's wrapper as a marker:
    gRPC would otherwise answer UNKNOWN with the exception's text."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _UNDECODABLE

    return deserialize


def _undecodable() -> InvalidArgument:
    return InvalidArgument("request is not a valid message of this method")


async def _decoded(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if request is _UNDECODABLE:
            raise _undecodable()
        yield request


# Services whose calls are not logged one by one: the health checks of Traefik and probes.
_UNLOGGED_SERVICES = frozenset({"grpc.health.v1.Health"})

# A call that arrives without a request id gets one of these: unique per process and
# far cheaper than a UUID, on a path that every such call takes.
_CALL_ID_PREFIX = f"grpc-{uuid.uuid4().hex[:12]}-"
_call_ids = itertools.count(1)


def _call_metadata(context: Context) -> tuple[str, str | None]:
    """The call's request id (its own, or a new one) and its W3C traceparent, if any."""
    request_id = traceparent = None
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and request_id is None and isinstance(value, str):
            request_id = sane_request_id(value)
        elif key == TRACEPARENT_KEY and traceparent is None and isinstance(value, str):
            traceparent = value
    return request_id or f"{_CALL_ID_PREFIX}{next(_call_ids)}", traceparent


class _Observation:
    """One call of one method: binds its request id and trace context (a server span when
    the call is sampled), then counts, times and maps its outcome. A class rather than a
    generator-based context manager: it runs for every call, and this form costs a
    fraction of the CPU."""

    __slots__ = ("_context", "_method", "_started", "_traced")

    def __init__(self, method: _Method, context: Context) -> None:
        self._method = method
        self._context = context
        self._started = 0.0
        self._traced: traced | None = None

    async def __aenter__(self) -> None:
        request_id, traceparent = _call_metadata(self._context)
        request_id_var.set(request_id)
        self._traced = traced(traceparent, self._method.name, attributes=self._method.attributes)
        self._traced.__enter__()
        structlog.contextvars.bind_contextvars(grpc_method=self._method.name)
        self._started = time.perf_counter()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> bool:
        """Count the outcome; turn errors into statuses (the abort raises its own)."""
        context, code = self._context, None
        try:
            if error is None or _is_abort(error):
                return False
            if isinstance(error, asyncio.CancelledError):
                code = "CANCELLED"
            elif isinstance(error, TimeoutError):
                code = "DEADLINE_EXCEEDED"
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
            elif isinstance(error, ServiceError):
                code = error.code.name
                await _abort_for(error, context)
            elif isinstance(error, Exception):
                code = "INTERNAL"
                await _abort_for(error, context)
            return False
        finally:
            code = code or _code_name(context)
            self._method.finished(code, self._started)
            if self._traced is not None:
                span = self._traced.span
                if span is not None:
                    span.set_attribute("rpc.grpc.status_code", _CODE_VALUES.get(code, 2))
                    if code != "OK":
                        span.set_status(StatusCode.ERROR, code)
                self._traced.__exit__(None, None, None)


class _Method:
    """What every call of one method shares: its names and its metric children."""

    __slots__ = ("_handled", "_handling", "_service", "_short", "attributes", "name")

    def __init__(self, full_method: str) -> None:
        self._service, self._short = _split_method(full_method)
        self.name = f"{self._service}/{self._short}"
        # A sampled call's server span (OpenTelemetry's RPC conventions).
        self.attributes = {
            "rpc.system": "grpc",
            "rpc.service": self._service,
            "rpc.method": self._short,
        }
        self._handling = GRPC_HANDLING.labels(self._service, self._short)
        self._handled: dict[str, Any] = {}

    def finished(self, code: str, started: float) -> None:
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = GRPC_HANDLED.labels(self._service, self._short, code)
        handled.inc()
        self._handling.observe(time.perf_counter() - started, exemplar())
        # One line per call (its method is bound as grpc_method), with the caller's request
        # id (docs/logging.md): a request is followed from the edge through every service
        # it reached by that id alone. Health checks, every few seconds, are left out.
        if self._service not in _UNLOGGED_SERVICES:
            log.info(
                "grpc_request",
                status=code,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )


class _ObservingInterceptor(grpc.aio.ServerInterceptor):
    """Metrics, request id, deadline and error mapping around every handler.

    The wrapped handler of a method is built once and reused: per-call state comes
    from the call's context, which keeps the per-call overhead small.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, MethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        cached = self._wrapped.get(details.method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None:
            return None
        wrapped = self._wrap(_Method(details.method), handler)
        self._wrapped[details.method] = wrapped
        return wrapped

    @staticmethod
    def _wrap(observed: _Method, handler: MethodHandler) -> MethodHandler:
        factory: Any
        if handler.unary_unary or handler.stream_unary:
            inner: Any = handler.unary_unary or handler.stream_unary

            streamed_requests = handler.stream_unary is not None

            async def behaviour(request: Any, context: Context) -> Any:
                async with _Observation(observed, context):
                    if streamed_requests:
                        request = _decoded(request)
                    elif request is _UNDECODABLE:
                        raise _undecodable()
                    remaining = context.time_remaining()
                    if remaining is None:
                        return await inner(request, context)
                    if remaining <= 0:
                        raise TimeoutError
                    async with asyncio.timeout(remaining):
                        return await inner(request, context)

            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
        else:
            inner = handler.unary_stream or handler.stream_stream
            streamed_requests = handler.stream_stream is not None

            async def behaviour(request: Any, context: Context) -> AsyncIterator[Any]:  # type: ignore[misc]
                async with _Observation(observed, context):
                    if streamed_requests:
                        request = _decoded(request)
                    elif request is _UNDECODABLE:
                        raise _undecodable()
                    async for item in inner(request, context):
                        yield item

            factory = (
                grpc.unary_stream_rpc_method_handler
                if handler.unary_stream
                else grpc.stream_stream_rpc_method_handler
            )

        wrapped: MethodHandler = factory(
            behaviour,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        return wrapped


def _is_abort(error: BaseException) -> bool:
    # context.abort() raises an internal exception type that must pass through.
    return type(error).__name__ == "AbortError"


_CODE_NAMES = {status.value[0]: status.name for status in grpc.StatusCode}
_CODE_VALUES = {status.name: status.value[0] for status in grpc.StatusCode}


def _code_name(context: Context) -> str:
    """The status a handler set on its context (by abort or set_code), OK if none."""
    code: object = context.code()
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return _CODE_NAMES.get(int(str(code)), "UNKNOWN")


Registrar = Callable[[grpc.aio.Server], Iterable[str]]
Hook = Callable[[], Awaitable[None]]


class GrpcService:
    """One gRPC server with health, reflection and the kit's interceptor.

    `register` adds the servicers and returns their full service names; they are
    reported SERVING once started. `on_started` runs right after the server started;
    `on_drained` runs after in-flight calls have finished (or the grace period ran out)
    during shutdown.
    """

    def __init__(
        self,
        register: Registrar,
        *,
        host: str,
        port: int,
        grace_seconds: float,
        on_started: Iterable[Hook] = (),
        on_drained: Iterable[Hook] = (),
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._server = grpc.aio.server(
            interceptors=[_ObservingInterceptor()],
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._names = list(register(self._server))
        reflection.enable_server_reflection(
            [*self._names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        self.port: int = self._server.add_insecure_port(f"{host}:{port}")
        self._grace = grace_seconds
        self._on_started = list(on_started)
        self._on_drained = list(on_drained)
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self._server.start()
        for name in ["", *self._names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        for hook in self._on_started:
            await hook()
        log.info("grpc server started", port=self.port, services=self._names)

    async def stop(self) -> None:
        """Refuse new calls, let in-flight ones finish within the grace period, run hooks."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        await self._health.enter_graceful_shutdown()
        log.info("grpc server draining", grace_seconds=self._grace)
        await self._server.stop(self._grace)
        for hook in self._on_drained:
            await hook()
        log.info("grpc server stopped")

    async def serve_until_signalled(self) -> None:
        """Start, then run until SIGTERM or SIGINT, then stop gracefully."""
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.stop()
