"""One suppression per (patient, client, route), so one client's override never ends or
replaces another client's suppression of the same route for the same patient (0005 kept
the key (patient, route): the latest override of any client overwrote the row). An index
to count each client's recent feedback (its allowance within the feedback window).

Suppressions made before revision 0005 have no client and leave no card out on anyone's
calls since then: they are dropped, and ``client`` is required. The change token moves
(triggers of revision 0004), so every process rereads its copy.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = "patient_hash, route, card_uuid, reason_code, fingerprint, indicator, " + (
    "suppressed_at, expires_at, client"
)
_SQLITE_EVENTS = ("INSERT", "UPDATE", "DELETE")
_SQLITE_NEW_TOKEN = (
    "UPDATE suppression_generation SET token = lower(hex(randomblob(16))) WHERE id = 1"
)
# Downgrading: of each (patient, route), the latest override's row stays (as 0005 kept it).
_ONE_PER_ROUTE = (
    "DELETE FROM suppression WHERE EXISTS (SELECT 1 FROM suppression AS later "
    "WHERE later.patient_hash = suppression.patient_hash AND later.route = suppression.route "
    "AND (later.suppressed_at > suppression.suppressed_at OR (later.suppressed_at = "
    "suppression.suppressed_at AND later.client > suppression.client)))"
)


def upgrade() -> None:
    op.execute("DELETE FROM suppression WHERE client IS NULL")
    _rekey(["patient_hash", "client", "route"], client_nullable=False)
    op.create_index("ix_feedback_client_received", "feedback", ["client", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_client_received", table_name="feedback")
    op.execute(_ONE_PER_ROUTE)
    _rekey(["patient_hash", "route"], client_nullable=True)


def _rekey(key: list[str], client_nullable: bool) -> None:
    """The suppression table's primary key becomes ``key``. PostgreSQL alters it in place
    (its statement trigger stays); SQLite cannot, so the table is copied and its row
    triggers (revision 0004) made again."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE suppression DROP CONSTRAINT suppression_pkey")
        op.alter_column("suppression", "client", nullable=client_nullable)
        op.create_primary_key("suppression_pkey", "suppression", key)
        return
    op.create_table(
        "suppression_rekeyed",
        sa.Column("patient_hash", sa.String(64), nullable=False),
        sa.Column("route", sa.String(64), nullable=False),
        sa.Column("card_uuid", sa.String(128), nullable=False),
        sa.Column("reason_code", sa.String(256), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("indicator", sa.String(16), nullable=True),
        sa.Column("suppressed_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("client", sa.String(255), nullable=client_nullable),
        sa.PrimaryKeyConstraint(*key, name="suppression_pkey"),
    )
    op.execute(f"INSERT INTO suppression_rekeyed ({_COLUMNS}) SELECT {_COLUMNS} FROM suppression")
    op.drop_table("suppression")  # its triggers go with it
    op.rename_table("suppression_rekeyed", "suppression")
    for event in _SQLITE_EVENTS:
        op.execute(
            f"CREATE TRIGGER suppression_changed_{event.lower()} AFTER {event} "
            f"ON suppression BEGIN {_SQLITE_NEW_TOKEN}; END"
        )
    op.execute(_SQLITE_NEW_TOKEN)  # rows may have gone: no copy read before is trusted
