"""Database schema, created and upgraded at start-up by Alembic.

The revisions live in ``versions/`` inside the package (an installed wheel has them); the
current schema, for queries and for comparing with the revisions, is
``cds_service.storage.database.metadata``. ``migrate`` upgrades to the newest revision inside the
caller's transaction, holding a lock so that several workers or instances starting
together do not race: on PostgreSQL an advisory lock, on SQLite the write lock the store
takes at ``BEGIN IMMEDIATE``. The others wait, then find nothing left to do.

A database made by the hand-written steps this replaced (table ``schema_version``) is
adopted: stamped at the revision matching its version, then upgraded like any other.

To change the schema: change ``cds_service.storage.database``, then
``.venv/bin/alembic revision --autogenerate -m "what and why"`` (``alembic.ini`` at the
repository root; it uses ``CDS_DATABASE_URL``), review the file, and never edit a revision
that has shipped.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

if TYPE_CHECKING:  # alembic takes most of a second to import: only when there is work
    from alembic.config import Config
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

# The newest revision. Starting on a database already there costs one query and no alembic
# import; a test checks this against versions/ (bump it with every new revision).
HEAD = "0006"
VERSION_TABLE = "alembic_version"
# Any constant works; it only has to be the same in every instance of this service.
_PG_LOCK_ID = 7_246_115_001
# The hand-written steps' versions (table schema_version) and the revisions that made the
# same schema.
LEGACY_REVISIONS = {1: "0001", 2: "0002"}
LEGACY_TABLE = "schema_version"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, without alembic.ini: the scripts come from the package."""
    from alembic.config import Config

    # Alembic says "Context impl SQLiteImpl." and the like at INFO on every run; the store
    # logs the revisions it applied.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config = Config()
    config.set_main_option("script_location", str(files(__name__)))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def latest_version() -> str:
    """The newest revision (the head)."""
    return HEAD


def current_version(conn: Connection) -> str | None:
    """The revision the database is at; None for an empty database."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


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
    current = current_version(conn)
    if current == HEAD:
        return []
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config(conn)
    if current is not None and not _known(ScriptDirectory.from_config(config), current):
        # Left by a newer release (e.g. during a rolling upgrade): its schema is a superset.
        log.warning(
            "database schema is at revision %s, newer than this release knows; not migrating",
            current,
        )
        return []
    _adopt_legacy(conn, config)
    applied: list[str] = []
    config.attributes["applied"] = applied
    command.upgrade(config, "head")
    return applied


def _known(script: ScriptDirectory, revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return script.get_revision(revision) is not None
    except CommandError:  # "Can't locate revision identified by ..."
        return False


def _adopt_legacy(conn: Connection, config: Config) -> None:
    """Stamp a database made by the hand-written steps, and drop their bookkeeping table."""
    from alembic import command

    tables = set(inspect(conn).get_table_names())
    if LEGACY_TABLE not in tables or VERSION_TABLE in tables:
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
