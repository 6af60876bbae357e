"""What the gateway holds for its whole life: built in the app's lifespan, kept on app.state."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as redis
from starlette.requests import HTTPConnection

from gatehouse_gateway.auditing import RefusalAudit
from gatehouse_gateway.auth import TokenVerifier
from gatehouse_gateway.cache import AuthorCache
from gatehouse_gateway.ratelimiting import RateLimiter
from gatehouse_gateway.settings import Settings
from gatehouse_gateway.upstreams import Upstreams
from gatehouse_kit.audit_client import AuditClient


@dataclass
class GatewayContext:
    """The long-lived collaborators of request and socket handlers."""

    settings: Settings
    verifier: TokenVerifier
    upstreams: Upstreams
    rate_limiter: RateLimiter
    audit: AuditClient
    refusals: RefusalAudit
    redis: redis.Redis
    author_cache: AuthorCache
    # Set once shutdown begins: /health/live and /health/ready answer 503, so that the
    # load balancer stops sending traffic before the port closes.
    draining: bool = field(default=False)

    @classmethod
    def build(cls, settings: Settings) -> GatewayContext:
        """Every collaborator, not yet started (see `start`)."""
        upstreams = Upstreams(settings)
        # Audit ingestion is a stream: it shares the (never retried) write channel.
        audit = AuditClient(upstreams.audit.write_channel, capacity=settings.audit_buffer_capacity)
        return cls(
            settings=settings,
            verifier=TokenVerifier(settings),
            upstreams=upstreams,
            rate_limiter=RateLimiter(upstreams.ratelimit, settings.rate_limit_fails_open),
            audit=audit,
            refusals=RefusalAudit(
                audit,
                window_seconds=settings.audit_refusal_window_seconds,
                max_keys=settings.audit_refusal_max_clients,
            ),
            redis=redis.Redis.from_url(settings.redis_url),
            author_cache=AuthorCache(
                settings.author_cache_max_entries, settings.author_cache_ttl_seconds
            ),
        )

    async def start(self) -> None:
        """Start background work (the audit sender and refusal windows, the quota stream)."""
        await self.audit.start()
        await self.refusals.start()
        await self.rate_limiter.start()

    async def close(self) -> None:
        """Flush audit events, give back unspent quota, then close every connection."""
        await self.refusals.close()
        await self.audit.close(timeout=self.settings.shutdown_grace_seconds)
        await self.rate_limiter.close()
        await self.verifier.aclose()
        await self.redis.aclose()
        await self.upstreams.close()


def gateway_context(connection: HTTPConnection) -> GatewayContext:
    """The context of the app serving `connection` (a Request or a WebSocket)."""
    context: GatewayContext = connection.app.state.context
    return context


def client_ip(connection: HTTPConnection) -> str:
    """The client's address (X-Forwarded-For believed only from trusted proxies)."""
    address: str = connection.scope.get("state", {}).get("client_ip", "")
    return address
