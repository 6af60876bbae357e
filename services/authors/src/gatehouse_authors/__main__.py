"""Entry point: `python -m gatehouse_authors` (placeholder serving health and metrics only)."""

from __future__ import annotations

import asyncio

import grpc
from pydantic_settings import SettingsConfigDict

from gatehouse_kit.grpc_server import GrpcService
from gatehouse_kit.logging import configure_logging
from gatehouse_kit.metrics import MetricsServer
from gatehouse_kit.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTHORS_", extra="ignore", frozen=True)

    grpc_port: int = 50051
    metrics_port: int = 9101


def _no_services(_: grpc.aio.Server) -> list[str]:
    return []


async def _serve(settings: Settings) -> None:
    metrics = MetricsServer(settings.bind_host, settings.metrics_port)
    service = GrpcService(
        _no_services,
        host=settings.bind_host,
        port=settings.grpc_port,
        grace_seconds=settings.shutdown_grace_seconds,
    )
    try:
        await service.serve_until_signalled()
    finally:
        metrics.close()


def main() -> None:
    settings = Settings()
    configure_logging("authors", settings.log_level, settings.log_json)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
