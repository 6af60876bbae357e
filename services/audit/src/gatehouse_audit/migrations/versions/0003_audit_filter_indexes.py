"""Indexes in page order for the username, resource and outcome filters.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FILTERED = ("username", "resource", "outcome")


def upgrade() -> None:
    # Walking the time index instead stops after a page only when matches are common: a
    # filter that matches few events or none (a resource never touched, an unknown
    # username) read every row, seconds on a large table, past the callers' deadline.
    # Each build holds writes to the table until it is done; the audit service retries
    # its batch meanwhile.
    for column in FILTERED:
        op.execute(
            f"CREATE INDEX audit_events_{column}_time_idx "
            f'ON audit_events ({column}, "timestamp" DESC, id DESC)'
        )


def downgrade() -> None:
    for column in FILTERED:
        op.execute(f"DROP INDEX audit_events_{column}_time_idx")
