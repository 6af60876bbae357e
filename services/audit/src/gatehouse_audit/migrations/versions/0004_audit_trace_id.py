"""The trace id of the request that caused each event.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table, and
    # events stored before it (and by a writer that does not know it yet) have none.
    op.execute("ALTER TABLE audit_events ADD COLUMN trace_id text NOT NULL DEFAULT ''")


def downgrade() -> None:
    op.execute("ALTER TABLE audit_events DROP COLUMN trace_id")
