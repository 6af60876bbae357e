"""Entry point: `python -m gatehouse_gateway` serves HTTP and WebSockets, with /metrics apart.

On SIGTERM the server drains (gatehouse_gateway.server): /health/live fails for
`GATEWAY_SHUTDOWN_DRAIN_SECONDS` while requests are still served, then sockets are told
1001 (going away) and in-flight requests finish within `GATEWAY_SHUTDOWN_GRACE_SECONDS`,
then buffered audit events are flushed.
"""

from __future__ import annotations

import asyncio

import uvicorn

from gatehouse_gateway.app import create_app
from gatehouse_gateway.server import GracefulServer
from gatehouse_gateway.settings import Settings
from gatehouse_kit.logging import configure_logging
from gatehouse_kit.metrics import MetricsServer


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    settings = Settings()
    configure_logging("gateway", settings.log_level, settings.log_json)
    metrics = MetricsServer(settings.bind_host, settings.metrics_port)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.bind_host,
        port=settings.http_port,
        log_config=None,
        # The edge middleware writes one structured line per request.
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
        ws_max_size=settings.ws_max_frame_bytes,
    )
    try:
        asyncio.run(GracefulServer(config, app).serve())
    finally:
        metrics.close()


if __name__ == "__main__":
    main()
