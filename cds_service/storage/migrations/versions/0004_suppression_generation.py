"""A change token for the suppression table, so each process can keep a copy of it.

The hook's path reads one row (the token) instead of querying the suppressions on every
call. Triggers on ``suppression`` write a new random token in every transaction that
inserts, updates or deletes a row, whoever makes the change: this release, an older one
still running during a rolling upgrade (it knows nothing of the token), or an operator.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_SQLITE_NEW_TOKEN = (
    "UPDATE suppression_generation SET token = lower(hex(randomblob(16))) WHERE id = 1"
)
_EVENTS = ("INSERT", "UPDATE", "DELETE")


def upgrade() -> None:
    table = op.create_table(
        "suppression_generation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("token", sa.String(32), nullable=False),
    )
    op.bulk_insert(table, [{"id": 1, "token": uuid.uuid4().hex}])
    if op.get_bind().dialect.name == "postgresql":
        # search_path as at creation, so the function finds the table whatever the caller's.
        op.execute(
            "CREATE FUNCTION suppression_changed() RETURNS trigger LANGUAGE plpgsql "
            "SET search_path FROM CURRENT AS $$ BEGIN "
            "UPDATE suppression_generation "
            "SET token = md5(random()::text || clock_timestamp()::text) WHERE id = 1; "
            "RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER suppression_changed AFTER INSERT OR UPDATE OR DELETE ON suppression "
            "FOR EACH STATEMENT EXECUTE FUNCTION suppression_changed()"
        )
    else:  # SQLite: row triggers only
        for event in _EVENTS:
            op.execute(
                f"CREATE TRIGGER suppression_changed_{event.lower()} AFTER {event} "
                f"ON suppression BEGIN {_SQLITE_NEW_TOKEN}; END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER suppression_changed ON suppression")
        op.execute("DROP FUNCTION suppression_changed()")
    else:
        for event in _EVENTS:
            op.execute(f"DROP TRIGGER suppression_changed_{event.lower()}")
    op.drop_table("suppression_generation")
