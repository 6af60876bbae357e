"""The audit_events table and the indexes of its queries.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE audit_events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id uuid NOT NULL,
            "timestamp" timestamptz NOT NULL,
            user_id text NOT NULL,
            username text NOT NULL,
            user_roles text[] NOT NULL,
            action_type text NOT NULL,
            resource text NOT NULL,
            outcome text NOT NULL
                CHECK (outcome IN ('success', 'error', 'permission_denied')),
            ip_address text NOT NULL,
            user_agent text NOT NULL,
            request_id text NOT NULL,
            request_data text NOT NULL,
            response_status integer NOT NULL,
            error_message text NOT NULL,
            duration_ms double precision NOT NULL,
            CONSTRAINT audit_events_event_id_key UNIQUE (event_id)
        )
        """
    )
    # Newest-first pages, date ranges and retention deletes; every filter has an index of
    # its own in page order (here and in 0003).
    op.execute('CREATE INDEX audit_events_time_idx ON audit_events ("timestamp" DESC, id DESC)')
    # /audit-logs/user/{user_id} and the user_id filter, already in page order.
    op.execute(
        "CREATE INDEX audit_events_user_time_idx "
        'ON audit_events (user_id, "timestamp" DESC, id DESC)'
    )
    # action_type filters (e.g. all DELETE /authors/{id}), already in page order.
    op.execute(
        "CREATE INDEX audit_events_action_time_idx "
        'ON audit_events (action_type, "timestamp" DESC, id DESC)'
    )


def downgrade() -> None:
    op.execute("DROP TABLE audit_events")
