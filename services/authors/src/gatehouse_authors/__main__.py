"""Entry point: `python -m gatehouse_authors` serves; `... migrate` manages the schema.

python -m gatehouse_authors                      serve (migrating first in development)
python -m gatehouse_authors migrate              upgrade to the newest revision
python -m gatehouse_authors migrate downgrade -1 one revision down (`base`: everything)
"""

from __future__ import annotations

import argparse

import structlog

from gatehouse_authors import migrate
from gatehouse_authors.app import build_app
from gatehouse_authors.settings import Settings
from gatehouse_kit.logging import configure_logging
from gatehouse_kit.metrics import MetricsServer
from gatehouse_kit.runtime import run
from gatehouse_kit.tracing import configure_tracing

log = structlog.get_logger(__name__)


async def _serve(settings: Settings) -> None:
    metrics = MetricsServer(settings.bind_host, settings.metrics_port)
    service = build_app(settings).grpc_service(settings)
    try:
        await service.serve_until_signalled()
    finally:
        metrics.close()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gatehouse_authors")
    commands = parser.add_subparsers(dest="command")
    schema = commands.add_parser("migrate", help="apply or revert schema migrations")
    schema.add_argument("direction", nargs="?", choices=["upgrade", "downgrade"], default="upgrade")
    schema.add_argument("revision", nargs="?", help="target (upgrade: head; downgrade: required)")
    return parser.parse_args()


def main() -> None:
    arguments = _arguments()
    settings = Settings()
    configure_logging(
        "authors", settings.log_level, settings.log_json, flush_seconds=settings.log_flush_seconds
    )
    if arguments.command == "migrate":
        if arguments.direction == "downgrade":
            if not arguments.revision:
                raise SystemExit("migrate downgrade needs a revision (e.g. -1 or base)")
            migrate.downgrade(settings.database_url, arguments.revision)
        else:
            migrate.upgrade(settings.database_url, arguments.revision or "head")
        log.info("migrations applied", direction=arguments.direction)
        return
    if settings.migrates_on_start:
        migrate.upgrade(settings.database_url)
    configure_tracing("authors", settings, instrument=("asyncpg", "redis"))
    run(_serve(settings))


if __name__ == "__main__":
    main()
