"""Database schema, created and upgraded at start-up by Alembic.

The revisions live in ``versions/`` inside the package (an installed wheel has them); the
current schema, for queries and for comparing with the revisions, is
``cds_service.database.metadata``. ``migrate`` upgrades to the newest revision inside the
caller's transaction, holding a lock so that several workers or instances starting
together do not race: on PostgreSQL an advisory lock, on SQLite the write lock the store
takes at ``BEGIN IMMEDIATE``. The others wait, then find nothing left to do.

A database made by the hand-written steps this replaced (table ``schema_version``) is
adopted: stamped at the revision matching its version, then upgraded like any other.

To change the schema: change ``cds_service.database``, then
``.venv/bin/alembic revision --autogenerate -m "what and why"`` (``alembic.ini`` at the
repository root; it uses ``CDS_DATABASE_URL``), review the file, and never edit a revision
that has shipped.
"""

from __future__ import annotations

import logging
from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

# Alembic says "Context impl SQLiteImpl." and the like at INFO on every start; the store
# logs the revisions it applied.
logging.getLogger("alembic").setLevel(logging.WARNING)

# Any constant works; it only has to be the same in every instance of this service.
_PG_LOCK_ID = 7_246_115_001
# The hand-written steps' versions (table schema_version) and the revisions that made the
# same schema.
LEGACY_REVISIONS = {1: "0001", 2: "0002"}
LEGACY_TABLE = "schema_version"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, without alembic.ini: the scripts come from the package."""
    config = Config()
    config.set_main_option("script_location", str(files(__name__)))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def latest_version() -> str:
    """The newest revision (the head)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no revisions in cds_service/migrations/versions"
    return head


def current_version(conn: Connection) -> str | None:
    """The revision the database is at; None for an empty database."""
    return MigrationContext.configure(conn).get_current_revision()


def lock(conn: Connection) -> None:
    """Hold the migration lock until the caller's transaction ends.

    SQLite needs nothing here: the store's transactions start with BEGIN IMMEDIATE, which
    already excludes every other writer.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})


def migrate(conn: Connection) -> list[str]:
    """Upgrade to the newest revision inside the caller's transaction; the revisions applied."""
    lock(conn)
    config = alembic_config(conn)
    _adopt_legacy(conn, config)
    applied: list[str] = []
    config.attributes["applied"] = applied
    command.upgrade(config, "head")
    return applied


def _adopt_legacy(conn: Connection, config: Config) -> None:
    """Stamp a database made by the hand-written steps, and drop their bookkeeping table."""
    tables = set(inspect(conn).get_table_names())
    if LEGACY_TABLE not in tables or "alembic_version" in tables:
        return
    version = conn.execute(text(f"SELECT max(version) FROM {LEGACY_TABLE}")).scalar() or 0
    if version:
        if version not in LEGACY_REVISIONS:
            raise RuntimeError(
                f"{LEGACY_TABLE} is at version {version}, newer than this "
                "service knows: refusing to touch the schema"
            )
        command.stamp(config, LEGACY_REVISIONS[version])
    conn.execute(text(f"DROP TABLE {LEGACY_TABLE}"))
