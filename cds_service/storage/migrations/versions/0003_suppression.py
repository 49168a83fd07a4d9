"""Suppression of a card after an override with a suppressing reason; the evidence
fingerprint, indicator and suppressed flag of issued cards.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issued_card") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
        batch.add_column(sa.Column("indicator", sa.String(16), nullable=True))
        batch.add_column(
            sa.Column("suppressed", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_table(
        "suppression",
        sa.Column("patient_hash", sa.String(64), primary_key=True),
        sa.Column("route", sa.String(64), primary_key=True),
        sa.Column("card_uuid", sa.String(128), nullable=False),
        sa.Column("reason_code", sa.String(256), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("indicator", sa.String(16), nullable=True),
        sa.Column("suppressed_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("suppression")
    with op.batch_alter_table("issued_card") as batch:
        batch.drop_column("suppressed")
        batch.drop_column("indicator")
        batch.drop_column("fingerprint")
