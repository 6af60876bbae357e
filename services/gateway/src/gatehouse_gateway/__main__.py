"""Entry point: `python -m gatehouse_gateway` serves HTTP and WebSockets, with /metrics apart.

On SIGTERM the server drains (gatehouse_gateway.server): /health/live fails for
`GATEWAY_SHUTDOWN_DRAIN_SECONDS` while requests are still served, then sockets are told
1001 (going away) and in-flight requests finish within `GATEWAY_SHUTDOWN_GRACE_SECONDS`,
then buffered audit events are flushed. Idle keep-alive connections are kept for
`GATEWAY_KEEP_ALIVE_SECONDS`, longer than Traefik keeps its own (docs/api.md, Keep-alive).
"""

from __future__ import annotations

from gatehouse_gateway.app import create_app
from gatehouse_gateway.server import GracefulServer, uvicorn_config
from gatehouse_gateway.settings import Settings
from gatehouse_kit.logging import configure_logging
from gatehouse_kit.metrics import MetricsServer
from gatehouse_kit.runtime import run
from gatehouse_kit.tracing import configure_tracing


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    settings = Settings()
    configure_logging(
        "gateway", settings.log_level, settings.log_json, flush_seconds=settings.log_flush_seconds
    )
    configure_tracing("gateway", settings, edge=True)
    metrics = MetricsServer(settings.bind_host, settings.metrics_port)
    app = create_app(settings)
    config = uvicorn_config(settings, app)
    try:
        run(GracefulServer(config, app).serve())
    finally:
        metrics.close()


if __name__ == "__main__":
    main()
