"""The audit_dead_letters table: events set aside because they can never be stored.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # `event` is the event's fields as JSON, every text escaped and bounded
    # (gatehouse_kit.audit_text), so that the database always accepts it; `event_id` is
    # the producer's when it is a UUID (a redelivery is stored once), else a new one.
    op.execute(
        """
        CREATE TABLE audit_dead_letters (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id uuid NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            reason text NOT NULL,
            event jsonb NOT NULL,
            CONSTRAINT audit_dead_letters_event_id_key UNIQUE (event_id)
        )
        """
    )
    # Review by time, and retention deletes.
    op.execute("CREATE INDEX audit_dead_letters_received_idx ON audit_dead_letters (received_at)")


def downgrade() -> None:
    op.execute("DROP TABLE audit_dead_letters")
