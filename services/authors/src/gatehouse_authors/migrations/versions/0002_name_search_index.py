"""Trigram index so that case-insensitive substring search does not scan the table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # pg_trgm is a trusted extension: the database owner may create it.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE INDEX authors_name_trgm ON authors USING gin (name gin_trgm_ops)")


def downgrade() -> None:
    op.execute("DROP INDEX authors_name_trgm")
    op.execute("DROP EXTENSION IF EXISTS pg_trgm")
