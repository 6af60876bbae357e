"""Alembic migrations of the audit database (`python -m gatehouse_audit migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config for the package's migrations against `database_url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    url = database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to `revision` (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(database_url), revision)
