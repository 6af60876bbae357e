"""gRPC channels to other services: reuse, keepalive, deadlines, retries, metrics.

One channel per target lives for the whole process. Retries of UNAVAILABLE are done
by gRPC itself through the service config, so only calls that never reached a
server (or were refused before any processing) are retried. Unary calls made through
`unary` carry the request id and the trace context and are timed and counted per service and method.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
from opentelemetry.trace import StatusCode
from prometheus_client import Counter, Histogram

from gatehouse_kit.grpc_server import REQUEST_ID_KEY
from gatehouse_kit.logging import request_id_var
from gatehouse_kit.tracing import (
    TRACEPARENT_KEY,
    client_span,
    exemplar,
    traceparent_of,
    traceparent_var,
)

UPSTREAM_REQUESTS = Counter(
    "upstream_requests_total",
    "gRPC calls made to other services, by final status code.",
    ["service", "method", "code"],
)
UPSTREAM_DURATION = Histogram(
    "upstream_request_duration_seconds",
    "Duration of gRPC calls made to other services.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def retry_service_config(max_attempts: int = 3) -> str:
    """A service config retrying UNAVAILABLE with backoff on every method."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{}],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.05s",
                        "maxBackoff": "0.5s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


async def unary(
    rpc: grpc.aio.UnaryUnaryMultiCallable[Any, Any],
    request: Any,
    *,
    service: str,
    method: str,
    deadline: float,
) -> Any:
    """`await rpc(request)` within `deadline` seconds, with the caller's request id and
    trace context as metadata, timed and counted by final status code (UPSTREAM_DURATION,
    UPSTREAM_REQUESTS); a client span when the caller's request is sampled.

    Not a grpc.aio client interceptor: an intercepted call runs in a task of its own
    with futures around it, about 25 µs more CPU per call on two cores (a WebSocket
    GET_AUTHOR makes two calls).
    """
    request_id = request_id_var.get()
    metadata: tuple[tuple[str, str], ...] = ((REQUEST_ID_KEY, request_id),) if request_id else ()
    traceparent = traceparent_var.get()
    span = client_span(f"{service}/{method}") if traceparent is not None else None
    if span is not None:
        metadata += ((TRACEPARENT_KEY, traceparent_of(span)),)
        span.set_attributes({"rpc.system": "grpc", "rpc.service": service, "rpc.method": method})
    elif traceparent is not None:
        # Not sampled: the decision travels on as it came.
        metadata += ((TRACEPARENT_KEY, traceparent),)
    code = grpc.StatusCode.UNKNOWN
    started = time.perf_counter()
    try:
        reply = await rpc(request, timeout=deadline, metadata=metadata or None)
        code = grpc.StatusCode.OK
        return reply
    except grpc.aio.AioRpcError as error:
        code = error.code()
        raise
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
        raise
    finally:
        UPSTREAM_DURATION.labels(service, method).observe(time.perf_counter() - started, exemplar())
        UPSTREAM_REQUESTS.labels(service, method, code.name).inc()
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(StatusCode.ERROR, code.name)
            span.end()


def open_channel(
    target: str,
    *,
    authority: str | None = None,
    max_attempts: int = 3,
) -> grpc.aio.Channel:
    """An insecure (h2c) channel to `target`.

    `max_attempts` counts the first try; 1 turns retries off.

    `authority` sets the :authority header, which Traefik's grpc entrypoint routes on
    for calls (such as grpc.health.v1) whose path does not name the service.
    """
    options: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    if max_attempts > 1:
        options += [
            ("grpc.service_config", retry_service_config(max_attempts)),
            ("grpc.enable_retries", 1),
        ]
    else:
        options.append(("grpc.enable_retries", 0))
    if authority:
        options.append(("grpc.default_authority", authority))
    return grpc.aio.insecure_channel(target, options=options)
