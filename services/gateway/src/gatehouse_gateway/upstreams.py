"""gRPC clients of the authors, audit and ratelimit services.

Each upstream keeps long-lived channels for the whole process: one with gRPC's retry
policy for idempotent reads (Get/List/Query), one without retries for writes
(Create/Update/Delete), since a retried write could apply twice. Every call has a
deadline and runs through the upstream's circuit breaker, so a service that is down
answers a prompt 503 instead of a hang or a pile of waiting calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Gauge
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.messages.events import ContextChanged
from purgatory.domain.model import OpenedState

from gatehouse_gateway.author_batches import AuthorBatches
from gatehouse_gateway.errors import from_grpc, service_unavailable
from gatehouse_gateway.settings import Settings
from gatehouse_kit.grpc_client import open_channel, unary
from gatehouse_protos.audit.v1 import audit_pb2_grpc
from gatehouse_protos.authors.v1 import authors_pb2_grpc

CIRCUIT_BREAKER_STATE = Gauge(
    "circuit_breaker_state",
    "State of the circuit breaker of each upstream: 0 closed, 1 open, 2 half-open.",
    ["service"],
)
_STATE_VALUE = {"closed": 0, "opened": 1, "half-opened": 2}

# Codes saying the upstream itself is in trouble; the rest are answers about the request
# (not found, conflict, bad input) and must not open the breaker. Nor does CANCELLED: a
# healthy server cancels the calls of a burst beyond what one connection takes (10,000
# sockets closing at once release their leases together), and an open breaker would
# then fail every request of the replica for its whole open time.
_BREAKER_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

Resp = TypeVar("Resp")
Stub = TypeVar("Stub")


def _not_a_failure(error: BaseException) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() not in _BREAKER_FAILURES


def _track_state(name: str, hook: str, event: Any) -> None:
    if hook == "state_changed" and isinstance(event, ContextChanged):
        CIRCUIT_BREAKER_STATE.labels(name).set(_STATE_VALUE.get(event.state, 0))


class Upstream:
    """One gRPC service: its channels, deadline and circuit breaker."""

    def __init__(
        self,
        name: str,
        target: str,
        authority: str,
        *,
        deadline: float,
        read_attempts: int,
        breakers: AsyncCircuitBreakerFactory,
    ) -> None:
        self.name = name
        self.deadline = deadline
        self.read_channel = open_channel(
            target, authority=authority or None, max_attempts=read_attempts
        )
        self.write_channel = open_channel(target, authority=authority or None, max_attempts=1)
        self._breakers = breakers
        # Method names by callable, for the metrics of `call`; filled by `stub`.
        self._methods: dict[object, str] = {}
        CIRCUIT_BREAKER_STATE.labels(name).set(0)

    def stub(self, factory: Callable[[grpc.aio.Channel], Stub], *, writes: bool = False) -> Stub:
        """A generated stub on the retrying read channel, or on the write channel (no
        retries: a retried write could apply twice), whose methods `call` accepts."""
        stub = factory(self.write_channel if writes else self.read_channel)
        for method, rpc in vars(stub).items():
            self._methods[rpc] = method
        return stub

    async def call(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[Any, Resp],
        request: Any,
        *,
        deadline: float | None = None,
    ) -> Resp:
        """`await rpc(request)` with a deadline, through the breaker, errors as ApiError;
        `rpc` is a method of a stub made by `stub`."""
        breaker = await self._breakers.get_breaker(self.name)
        try:
            async with breaker:
                return cast(
                    Resp,
                    await unary(
                        rpc,
                        request,
                        service=self.name,
                        method=self._methods[rpc],
                        deadline=deadline or self.deadline,
                    ),
                )
        except OpenedState:
            raise service_unavailable(self.name) from None
        except grpc.aio.AioRpcError as error:
            raise from_grpc(error, self.name) from None

    async def healthy(self, deadline: float = 1.0) -> bool:
        """Whether the service answers grpc.health.v1 with SERVING."""
        stub = health_pb2_grpc.HealthStub(self.read_channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=deadline)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        """Close both channels (in-flight calls are cancelled)."""
        await self.read_channel.close()
        await self.write_channel.close()


class Upstreams:
    """The three upstreams of the gateway, with typed stubs for reads and writes."""

    def __init__(self, settings: Settings) -> None:
        breakers = AsyncCircuitBreakerFactory(
            default_threshold=settings.breaker_failure_threshold,
            default_ttl=settings.breaker_open_seconds,
            exclude=[(grpc.aio.AioRpcError, _not_a_failure)],
        )
        breakers.add_listener(_track_state)

        def upstream(name: str, target: str, authority: str) -> Upstream:
            return Upstream(
                name,
                target,
                authority,
                deadline=settings.upstream_deadline_seconds,
                read_attempts=settings.upstream_read_attempts,
                breakers=breakers,
            )

        self.authors = upstream("authors", settings.authors_target, settings.authors_authority)
        self.audit = upstream("audit", settings.audit_target, settings.audit_authority)
        self.ratelimit = upstream(
            "ratelimit", settings.ratelimit_target, settings.ratelimit_authority
        )
        self.ratelimit.deadline = settings.ratelimit_deadline_seconds
        self.authors_reads = self.authors.stub(authors_pb2_grpc.AuthorsServiceStub)
        self.authors_writes = self.authors.stub(authors_pb2_grpc.AuthorsServiceStub, writes=True)
        self.author_batches = AuthorBatches(self.authors, self.authors_reads.BatchGetAuthors)
        self.audit_reads = self.audit.stub(audit_pb2_grpc.AuditServiceStub)

    def all(self) -> tuple[Upstream, ...]:
        """Every upstream, for health checks and shutdown."""
        return (self.authors, self.audit, self.ratelimit)

    async def close(self) -> None:
        """Close every channel."""
        for upstream in self.all():
            await upstream.close()
