"""Database schema, created and upgraded at start-up by ordered, numbered steps.

The table ``schema_version`` holds one row per step already applied. ``migrate`` applies
the missing steps in order, all in one transaction, holding a lock so that several workers
or instances starting together do not race (PostgreSQL: an advisory lock; SQLite: the
store opens every transaction with ``BEGIN IMMEDIATE``).

To change the schema, append a new step to ``STEPS``; never edit a step that has shipped.
Each step builds its DDL with SQLAlchemy so the same step runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import (JSON, Boolean, Column, Connection, DateTime, Index, Integer, MetaData,
                        String, Table, Text, UniqueConstraint, insert, select, text)

# Any constant works; it only has to be the same in every instance of this service.
_PG_LOCK_ID = 7_246_115_001


def _step_1_cards_and_feedback(conn: Connection) -> None:
    """Issued cards and the feedback clinicians gave on them."""
    metadata = MetaData()
    Table(
        "issued_card", metadata,
        Column("card_uuid", String(128), primary_key=True),
        Column("route", String(64), nullable=False),
        Column("rule_ids", String(1024), nullable=False),  # fired criterion ids, comma-joined
        Column("hook_instance", String(128), nullable=False),
        Column("patient_hash", String(64), nullable=False),  # HMAC-SHA256 hex, never the id
        Column("issued_at", DateTime, nullable=False),  # UTC
        Index("ix_issued_card_issued_at", "issued_at"),
    )
    Table(
        "feedback", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("card_uuid", String(128), nullable=False),
        Column("outcome", String(16), nullable=False),
        Column("accepted_suggestions", JSON, nullable=True),  # list of suggestion uuids
        Column("override_reason_system", String(1024), nullable=True),
        Column("override_reason_code", String(256), nullable=True),
        Column("user_comment", Text, nullable=True),
        Column("outcome_timestamp", DateTime, nullable=False),  # UTC
        Column("received_at", DateTime, nullable=False),  # UTC
        Column("unknown_card", Boolean, nullable=False),
        UniqueConstraint("card_uuid", "outcome", "outcome_timestamp",
                         name="uq_feedback_card_outcome_time"),
    )
    metadata.create_all(conn)


def _step_2_jwt_replay(conn: Connection) -> None:
    """JWT ids already used, shared by every worker and instance (replay protection)."""
    metadata = MetaData()
    Table(
        "jwt_replay", metadata,
        Column("token_key", String(64), primary_key=True),  # SHA-256 of iss + jti
        Column("expires_at", DateTime, nullable=False),  # UTC
        Index("ix_jwt_replay_expires_at", "expires_at"),
    )
    metadata.create_all(conn)


STEPS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "issued cards and feedback", _step_1_cards_and_feedback),
    (2, "shared JWT replay cache", _step_2_jwt_replay),
]

_metadata = MetaData()
schema_version = Table(
    "schema_version", _metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", DateTime, nullable=False),
)


def current_version(conn: Connection) -> int:
    return conn.execute(select(schema_version.c.version)
                        .order_by(schema_version.c.version.desc()).limit(1)).scalar() or 0


def migrate(conn: Connection) -> list[int]:
    """Apply the missing steps inside the caller's transaction; the versions applied."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
    _metadata.create_all(conn)  # schema_version itself (checkfirst)
    done = current_version(conn)
    applied = []
    for version, description, step in STEPS:
        if version <= done:
            continue
        step(conn)
        conn.execute(insert(schema_version).values(
            version=version, description=description,
            applied_at=datetime.now(timezone.utc).replace(tzinfo=None)))
        applied.append(version)
    return applied


def latest_version() -> int:
    return STEPS[-1][0]
