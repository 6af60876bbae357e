"""Entry point: `python -m gatehouse_ratelimit` serves decisions, quota and leases until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from dataclasses import dataclass

import grpc
import structlog

from gatehouse_kit.grpc_server import GrpcService
from gatehouse_kit.logging import configure_logging
from gatehouse_kit.metrics import MetricsServer
from gatehouse_kit.runtime import run
from gatehouse_kit.tracing import configure_tracing
from gatehouse_protos.ratelimit.v1 import ratelimit_pb2_grpc
from gatehouse_ratelimit.leases import ConnectionLeases
from gatehouse_ratelimit.limiter import RateLimiter
from gatehouse_ratelimit.rules import RulesFile, resolve_rules_path
from gatehouse_ratelimit.service import SERVICE_NAME, RateLimitServicer
from gatehouse_ratelimit.settings import Settings
from gatehouse_ratelimit.store import BackendError, RedisStore

log = structlog.get_logger(__name__)


@dataclass
class RunningService:
    """A ratelimit server (start it with `grpc.start()`), its rules file and its store."""

    grpc: GrpcService
    rules: RulesFile
    store: RedisStore
    watcher: asyncio.Task[None]
    stop_watching: asyncio.Event

    async def stop(self) -> None:
        """Drain the server, then stop watching the rules and close Redis."""
        await self.grpc.stop()


async def build(settings: Settings) -> RunningService:
    """Load the rules (failing loudly when they are broken) and wire the server."""
    rules = RulesFile(resolve_rules_path(settings.rules_path))
    store = RedisStore(
        settings.redis_url,
        timeout_seconds=settings.redis_timeout_ms / 1000,
        key_prefix=settings.key_prefix,
        max_connections=settings.redis_max_connections,
    )
    try:
        await store.load_scripts()
    except BackendError as error:
        # Not fatal: the scripts load on first use once Redis answers.
        log.warning("redis not reachable at start", error=str(error))
    fail_mode = settings.effective_fail_mode
    servicer = RateLimitServicer(
        RateLimiter(store, rules, fail_mode, settings.quota_lease_ms / 1000),
        ConnectionLeases(store, rules, fail_mode, settings.lease_ttl_seconds),
    )

    def register(server: grpc.aio.Server) -> list[str]:
        ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    stop_watching = asyncio.Event()
    watcher = asyncio.create_task(rules.watch(stop_watching, settings.rules_reload_debounce_ms))

    async def close() -> None:
        stop_watching.set()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await store.close()

    service = GrpcService(
        register,
        host=settings.bind_host,
        port=settings.grpc_port,
        grace_seconds=settings.shutdown_grace_seconds,
        on_drained=[close],
    )
    log.info(
        "ratelimit ready",
        rules=str(rules.path),
        fail_mode=fail_mode,
        domains=sorted(rules.rules.document.domains),
    )
    return RunningService(service, rules, store, watcher, stop_watching)


async def _serve(settings: Settings) -> None:
    metrics = MetricsServer(settings.bind_host, settings.metrics_port)
    try:
        running = await build(settings)
        # What start-up made (modules, rules, clients) lives on: keep it out of GC passes,
        # which would otherwise walk it all and stall decisions now and then.
        gc.freeze()
        await running.grpc.serve_until_signalled()
    finally:
        metrics.close()


def main() -> None:
    """Serve with settings from the environment until SIGTERM or SIGINT."""
    settings = Settings()
    configure_logging(
        "ratelimit", settings.log_level, settings.log_json, flush_seconds=settings.log_flush_seconds
    )
    configure_tracing("ratelimit", settings, instrument=("redis",))
    run(_serve(settings))


if __name__ == "__main__":
    main()
