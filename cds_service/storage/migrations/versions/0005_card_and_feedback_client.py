"""The client a card was issued to and the client that sent each feedback item, so feedback
is accepted only from the card's own client; the client of each suppression, so it leaves
the card out only on that client's calls; indexes to count recent feedback for unknown
cards (capped per client and overall).

Rows written before this revision keep NULL: no client is known, so feedback on those cards
is stored but suppresses nothing, and those suppressions no longer apply (the card is shown
until a new override).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns without a default: an ALTER TABLE ADD COLUMN on both backends (no
    # SQLite table copy), so large tables are upgraded at once.
    with op.batch_alter_table("issued_card") as batch:
        batch.add_column(sa.Column("client", sa.String(255), nullable=True))
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("client", sa.String(255), nullable=True))
    # ALTER TABLE ADD COLUMN, so SQLite keeps the table and its triggers (revision 0004).
    with op.batch_alter_table("suppression") as batch:
        batch.add_column(sa.Column("client", sa.String(255), nullable=True))
    op.create_index(
        "ix_feedback_unknown_client", "feedback", ["unknown_card", "client", "received_at"]
    )
    op.create_index("ix_feedback_unknown_received", "feedback", ["unknown_card", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_unknown_received", table_name="feedback")
    op.drop_index("ix_feedback_unknown_client", table_name="feedback")
    with op.batch_alter_table("suppression") as batch:
        batch.drop_column("client")
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("client")
    with op.batch_alter_table("issued_card") as batch:
        batch.drop_column("client")
