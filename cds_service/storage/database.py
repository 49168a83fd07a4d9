"""The database: the tables, the engine, and what every store operation shares.

SQLite (the default, a file in ``CDS_DATA_DIR``) or PostgreSQL (``CDS_DATABASE_URL``).
The tables here are the current schema, the only definition of it: queries are built from
them, and the Alembic revisions in ``cds_service.storage.migrations`` (which create and upgrade the
schema) are generated from and checked against them. Timestamps are naive UTC.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
    insert,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError

from cds_service.config import ConfigError, Settings
from cds_service.errors import Unavailable

log = logging.getLogger(__name__)

# The current schema. A change here needs an Alembic revision (cds_service/storage/migrations);
# tests/test_migrations.py checks that the upgraded database matches these tables.
metadata = MetaData()
issued_card = Table(
    "issued_card",
    metadata,
    Column("card_uuid", String(128), primary_key=True),
    Column("route", String(64), nullable=False),
    Column("rule_ids", String(1024), nullable=False),  # fired criterion ids, comma-joined
    Column("hook_instance", String(128), nullable=False),
    Column("patient_hash", String(64), nullable=False),  # HMAC-SHA256 hex, never the id
    Column("issued_at", DateTime, nullable=False),  # UTC
    # HMAC (salted like the patient hash) of the card's evidence fingerprint (service.py).
    Column("fingerprint", String(64), nullable=True),
    Column("indicator", String(16), nullable=True),
    # True: the card was rendered but left out of the response by a suppression.
    Column("suppressed", Boolean, nullable=False, server_default=false()),
    # The client the card was issued to: the JWT ``iss``, or "anonymous" without
    # authentication (protocol/feedback.py). NULL: written before revision 0005, or by an
    # older release; feedback on such a card suppresses nothing.
    Column("client", String(255), nullable=True),
    Index("ix_issued_card_issued_at", "issued_at"),
)
FEEDBACK_KEY = ["card_uuid", "outcome", "outcome_timestamp"]
feedback = Table(
    "feedback",
    metadata,
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
    # Who sent it (as ``issued_card.client``); NULL before revision 0005.
    Column("client", String(255), nullable=True),
    UniqueConstraint(*FEEDBACK_KEY, name="uq_feedback_card_outcome_time"),
    # Counting recent feedback per client, and for unknown cards per client and overall
    # (the caps: feedback_checks.py).
    Index("ix_feedback_client_received", "client", "received_at"),
    Index("ix_feedback_unknown_client", "unknown_card", "client", "received_at"),
    Index("ix_feedback_unknown_received", "unknown_card", "received_at"),
)
jwt_replay = Table(
    "jwt_replay",
    metadata,
    Column("token_key", String(64), primary_key=True),  # SHA-256 of iss + jti
    Column("expires_at", DateTime, nullable=False),  # UTC
    Index("ix_jwt_replay_expires_at", "expires_at"),
)
# An override with a suppressing reason: the route's card is left out for this patient, on
# the calls of the client that overrode it, until ``expires_at`` unless its evidence
# fingerprint changes or its indicator rises. One row per (patient, client, route): the
# client's latest override wins, and another client's never touches it. The primary key
# is the hot-path lookup index (patient and client, then route).
SUPPRESSION_KEY = ["patient_hash", "client", "route"]
suppression = Table(
    "suppression",
    metadata,
    Column("patient_hash", String(64), nullable=False),
    Column("route", String(64), nullable=False),
    Column("card_uuid", String(128), nullable=False),  # the overridden card
    Column("reason_code", String(256), nullable=False),
    Column("fingerprint", String(64), nullable=True),  # of the overridden card
    Column("indicator", String(16), nullable=True),
    Column("suppressed_at", DateTime, nullable=False),  # UTC, the override's time
    Column("expires_at", DateTime, nullable=False),  # UTC
    # The client whose override it was (its card's): only that client's calls leave the card
    # out. (Rows made before revision 0005 had none and applied to nobody: 0006 dropped them.)
    Column("client", String(255), nullable=False),
    PrimaryKeyConstraint(*SUPPRESSION_KEY, name="suppression_pkey"),
)

# One row (id 1): a random token every change of ``suppression`` replaces in its transaction,
# so a process can keep a copy of the suppressions and refresh it only when the token moves.
suppression_generation = Table(
    "suppression_generation",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("token", String(32), nullable=False),
)
GENERATION_ROW = 1

READ_ONLY = "cds_read"  # execution option: a read-only transaction (SQLite: deferred BEGIN)


class StoreUnavailable(Unavailable, RuntimeError):
    """The database cannot be reached; feedback answers 503 so the client retries."""


def utcnow() -> datetime:
    """Naive UTC: every timestamp column holds UTC without a zone, the same on every backend."""
    return datetime.now(UTC).replace(tzinfo=None)


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 timestamp as naive UTC (sub-microsecond digits are dropped)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).replace(tzinfo=None)


def describe(exc: BaseException) -> str:
    """An exception, for the log, without any row values (which may identify a patient).

    Connection-level messages ("connection refused", "database is locked") are kept;
    SQLAlchemy's own message is not, since it lists the statement's parameters.
    """
    orig = getattr(exc, "orig", None)
    name = type(exc).__name__
    if orig is not None and type(exc).__name__ in {"OperationalError", "InterfaceError"}:
        first_line = (str(orig).strip().splitlines() or [""])[0][:200]
        return f"{name}: {first_line}"
    if orig is not None:
        return f"{name} ({type(orig).__name__})"
    return name


def make_engine(settings: Settings) -> Engine:
    """The engine for ``settings.effective_database_url``; ConfigError if it is unusable."""
    try:
        url = make_url(settings.effective_database_url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError("CDS_DATABASE_URL is not a valid SQLAlchemy database URL") from None
    backend = url.get_backend_name()
    kwargs: dict = {"pool_pre_ping": True}
    if backend == "sqlite":
        # Few cached prepared statements: batches of issued cards come in many sizes, each
        # a new multi-row statement, and 128 of them (the default) cost megabytes.
        kwargs["connect_args"] = {"timeout": 15, "cached_statements": 16}
        if not settings.database_url.get_secret_value():  # the default file is in the data dir
            _make_data_dir(settings.data_dir)
    elif backend == "postgresql":
        if "connect_timeout" not in url.query:
            kwargs["connect_args"] = {"connect_timeout": 5}
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(f"CDS_DATABASE_URL cannot be used: {type(exc).__name__}: {exc}") from None
    if backend == "sqlite":
        _sqlite_transactions(engine)
    return engine


def _sqlite_transactions(engine: Engine) -> None:
    """Real transactions on SQLite (DDL included), taking the write lock at BEGIN.

    pysqlite's own transaction handling never wraps DDL and starts transactions late, which
    lets two writers deadlock on lock upgrade; SQLAlchemy's documented recipe fixes both.
    WAL lets readers (the report) work while the service writes.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # Reads on the hook's path (execution option ``cds_read``) must not take the write
        # lock: a deferred BEGIN. Everything else takes it up front.
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def _make_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        log.error("cannot create data directory %s: %s", data_dir, exc.strerror)


def insert_ignore(conn: Connection, table: Table, rows: list[dict], key: list[str]) -> None:
    """Insert rows, silently skipping those whose ``key`` (a unique constraint) exists.

    SQLite and PostgreSQL both have ``ON CONFLICT DO NOTHING``, which is atomic even when
    several writers insert the same row at once; other databases get a savepoint per row.
    With RETURNING, SQLAlchemy sends the rows as multi-row statements ("insertmanyvalues")
    rather than a driver ``executemany``: pysqlite releases and retakes the GIL for every
    row of an executemany, and a writer thread doing that while hook calls keep the CPU
    busy waits up to 5 ms each time (a 500-row batch took seconds and the queue grew).
    """
    if not rows:
        return
    name = conn.dialect.name
    if name in {"postgresql", "sqlite"}:
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        statement = dialect_insert(table).on_conflict_do_nothing(index_elements=key)
        if conn.dialect.insert_executemany_returning:  # SQLite >= 3.35, PostgreSQL
            conn.execute(statement.returning(*(table.c[k] for k in key)), rows).all()
        else:
            conn.execute(statement, rows)
        return
    for row in rows:
        try:
            with conn.begin_nested():
                conn.execute(insert(table), row)
        except IntegrityError:
            pass
