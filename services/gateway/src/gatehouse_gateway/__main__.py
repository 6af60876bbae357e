"""Entry point: `python -m gatehouse_gateway` (placeholder serving health and metrics only)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from gatehouse_kit.logging import configure_logging
from gatehouse_kit.metrics import MetricsServer
from gatehouse_kit.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    http_port: int = 8000
    metrics_port: int = 9100


app = FastAPI(title="Gatehouse")


@app.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    settings = Settings()
    configure_logging("gateway", settings.log_level, settings.log_json)
    metrics = MetricsServer(settings.bind_host, settings.metrics_port)
    try:
        uvicorn.run(app, host=settings.bind_host, port=settings.http_port, log_config=None)
    finally:
        metrics.close()


if __name__ == "__main__":
    main()
