"""Schema migrations: `python -m gatehouse_authors migrate [upgrade|downgrade] [revision]`.

Alembic's environment runs its own event loop, so these functions are synchronous;
async callers run them in a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database up to `revision` (the newest by default)."""
    command.upgrade(_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Take the database down to `revision` (`base` removes every table, `-1` one step)."""
    command.downgrade(_config(database_url), revision)
