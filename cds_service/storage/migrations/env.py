"""Alembic environment: run by ``migrations.migrate`` (connection given) or the alembic CLI."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import Connection

from cds_service.storage.database import metadata

config = context.config


def _run(connection: Connection) -> None:
    applied: list[str] | None = config.attributes.get("applied")

    def record(
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        if applied is not None and step.is_upgrade:
            applied.extend(step.up_revision_ids)

    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: copy-and-move tables
        compare_type=True,
        on_version_apply=record,
    )
    with context.begin_transaction():  # inside the caller's transaction, if any
        context.run_migrations()


def _run_from_command_line() -> None:
    """``alembic upgrade head`` etc.: the database of CDS_DATABASE_URL, under the lock."""
    from cds_service.config import Settings
    from cds_service.storage import migrations
    from cds_service.storage.database import make_engine

    engine = make_engine(Settings.from_env())
    try:
        with engine.begin() as connection:
            migrations.lock(connection)
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: run against a database")
connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    _run_from_command_line()
