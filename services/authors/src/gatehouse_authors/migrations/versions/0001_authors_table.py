"""The authors table: identity id, unique trimmed name, timestamps, version.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "authors",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        sa.UniqueConstraint("name", name="authors_name_key"),
        # A last line of defence behind the service's own validation.
        sa.CheckConstraint("char_length(name) BETWEEN 1 AND 255", name="authors_name_length"),
    )


def downgrade() -> None:
    op.drop_table("authors")
