"""Entry point: `python -m gatehouse_audit` serves; `python -m gatehouse_audit migrate` migrates."""

from __future__ import annotations

import argparse
import asyncio
import signal

from gatehouse_audit.app import AuditApp
from gatehouse_audit.migrate import upgrade
from gatehouse_audit.settings import Settings
from gatehouse_kit.logging import configure_logging
from gatehouse_kit.metrics import MetricsServer
from gatehouse_kit.runtime import run
from gatehouse_kit.tracing import configure_tracing


async def _serve(settings: Settings) -> None:
    metrics = MetricsServer(settings.bind_host, settings.metrics_port)
    app = AuditApp(settings)
    try:
        await app.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await app.stop()
    finally:
        metrics.close()


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM, or run the migrations with the `migrate` command."""
    parser = argparse.ArgumentParser(prog="gatehouse-audit", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(
        "audit", settings.log_level, settings.log_json, flush_seconds=settings.log_flush_seconds
    )
    if args.command == "migrate":
        upgrade(settings.database_url)
    else:
        configure_tracing("audit", settings, instrument=("asyncpg",))
        run(_serve(settings))


if __name__ == "__main__":
    main()
