"""Issued cards and the feedback clinicians gave on them.

Revision ID: 0001
Revises:
Create Date: 2026-11-01 (step 1 of the hand-written migrations it replaces)
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
        "issued_card",
        sa.Column("card_uuid", sa.String(128), primary_key=True),
        sa.Column("route", sa.String(64), nullable=False),
        sa.Column("rule_ids", sa.String(1024), nullable=False),
        sa.Column("hook_instance", sa.String(128), nullable=False),
        sa.Column("patient_hash", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_issued_card_issued_at", "issued_card", ["issued_at"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("card_uuid", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON, nullable=True),
        sa.Column("override_reason_system", sa.String(1024), nullable=True),
        sa.Column("override_reason_code", sa.String(256), nullable=True),
        sa.Column("user_comment", sa.Text, nullable=True),
        sa.Column("outcome_timestamp", sa.DateTime, nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("unknown_card", sa.Boolean, nullable=False),
        sa.UniqueConstraint(
            "card_uuid", "outcome", "outcome_timestamp", name="uq_feedback_card_outcome_time"
        ),
    )


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_index("ix_issued_card_issued_at", table_name="issued_card")
    op.drop_table("issued_card")
