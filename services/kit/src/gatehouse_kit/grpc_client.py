"""gRPC channels to other services: reuse, keepalive, deadlines, retries, metrics.

One channel per target lives for the whole process. Retries of UNAVAILABLE are done
by gRPC itself through the service config, so only calls that never reached a
server (or were refused before any processing) are retried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from gatehouse_kit.grpc_server import REQUEST_ID_KEY
from gatehouse_kit.logging import request_id_var

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


class _ClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Adds the request id to metadata and counts unary calls by outcome."""

    def __init__(self, service: str) -> None:
        self._service = service

    @staticmethod
    def _with_request_id(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        request_id = request_id_var.get()
        if request_id and not metadata.get_all(REQUEST_ID_KEY):
            metadata.add(REQUEST_ID_KEY, request_id)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    def _method(self, details: grpc.aio.ClientCallDetails) -> str:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        return str(method).rsplit("/", 1)[-1]

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        method = self._method(details)
        started = time.perf_counter()
        call = await continuation(self._with_request_id(details), request)
        try:
            code = await call.code()
        finally:
            UPSTREAM_DURATION.labels(self._service, method).observe(time.perf_counter() - started)
        UPSTREAM_REQUESTS.labels(self._service, method, code.name).inc()
        return call

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._with_request_id(details), request)

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await continuation(self._with_request_id(details), requests)

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await continuation(self._with_request_id(details), requests)


def open_channel(
    target: str,
    service: str,
    *,
    authority: str | None = None,
    max_attempts: int = 3,
) -> grpc.aio.Channel:
    """An insecure (h2c) channel to `target` for calls to `service`.

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
    return grpc.aio.insecure_channel(
        target, options=options, interceptors=[_ClientInterceptor(service)]
    )
