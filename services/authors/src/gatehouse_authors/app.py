"""Assembles the running service from its settings: engine, Redis, commands, gRPC server."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse_authors.commands import AuthorCommands
from gatehouse_authors.cursors import CursorCodec
from gatehouse_authors.database import make_engine
from gatehouse_authors.events import OutboxRelay, RelaySettings
from gatehouse_authors.repository import AuthorRepository
from gatehouse_authors.service import SERVICE_NAME, AuthorsServicer
from gatehouse_authors.settings import DEVELOPMENT_CURSOR_SECRET, Settings
from gatehouse_kit.grpc_server import GrpcService
from gatehouse_protos.authors.v1 import authors_pb2_grpc

log = structlog.get_logger(__name__)


@dataclass
class AuthorsApp:
    """The service's parts, built once per process and closed after the server drained."""

    engine: AsyncEngine
    relay: OutboxRelay
    servicer: AuthorsServicer

    def register(self, server: grpc.aio.Server) -> Iterable[str]:
        authors_pb2_grpc.add_AuthorsServiceServicer_to_server(self.servicer, server)
        return [SERVICE_NAME]

    def grpc_service(self, settings: Settings) -> GrpcService:
        """The gRPC server that serves this app and closes it once drained."""
        return GrpcService(
            self.register,
            host=settings.bind_host,
            port=settings.grpc_port,
            grace_seconds=settings.shutdown_grace_seconds,
            on_started=[self.relay.start],
            on_drained=[self.close],
        )

    async def close(self) -> None:
        await self.relay.stop()
        await self.relay.close()
        await self.engine.dispose()


def build_app(settings: Settings) -> AuthorsApp:
    """Connect nothing yet: the pool and Redis connect on first use, and reconnect alone;
    the outbox relay starts with the gRPC server."""
    secret = settings.cursor_secret.get_secret_value()
    if settings.profile == "production" and secret == DEVELOPMENT_CURSOR_SECRET:
        log.warning("AUTHORS_CURSOR_SECRET is the development default; set a secret of your own")
    engine = make_engine(
        settings.database_url,
        pool_size=settings.pool_size,
        max_overflow=settings.pool_max_overflow,
        pool_timeout=settings.pool_timeout_seconds,
        connect_timeout=settings.connect_timeout_seconds,
        statement_timeout=settings.statement_timeout_seconds,
        slow_query_seconds=settings.slow_query_seconds,
        ping_idle_seconds=settings.pool_ping_idle_seconds,
    )
    redis = Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
        # One retry replaces a pooled connection that died while Redis restarted.
        retry=Retry(NoBackoff(), 1),
    )
    relay = OutboxRelay(
        redis,
        RelaySettings(
            database_url=settings.database_url,
            stream=settings.stream,
            max_events=settings.stream_max_events,
            max_age_seconds=settings.stream_max_age_seconds,
            batch_size=settings.relay_batch_size,
            poll_seconds=settings.relay_poll_seconds,
            standby_seconds=settings.relay_standby_seconds,
            connect_timeout_seconds=settings.connect_timeout_seconds,
            statement_timeout_seconds=settings.statement_timeout_seconds,
        ),
    )
    commands = AuthorCommands(
        AuthorRepository(engine),
        CursorCodec(secret.encode()),
        exact_count_limit=settings.exact_count_limit,
    )
    return AuthorsApp(engine, relay, AuthorsServicer(commands))
