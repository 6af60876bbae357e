"""The change outbox: one row per committed change, written in the change's transaction.

The relay (gatehouse_authors.relay) publishes the rows to the Redis Stream of changes
and deletes them once Redis has them. A statement-level trigger notifies the channel
`author_outbox` on commit, so the relay wakes at once instead of polling.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "author_outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        # gatehouse.authors.v1.AuthorEvent.Kind
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("author_id", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False, server_default=""),
        sa.Column(
            "occurred_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.execute(
        "CREATE FUNCTION author_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_notify('author_outbox', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER author_outbox_notify AFTER INSERT ON author_outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION author_outbox_notify()"
    )


def downgrade() -> None:
    op.drop_table("author_outbox")
    op.execute("DROP FUNCTION author_outbox_notify()")
