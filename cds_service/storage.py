"""Durable record of issued cards and clinician feedback (SQLAlchemy; SQLite or PostgreSQL).

- ``record_cards`` runs on the hook's request path: it hashes the patient id, puts the rows
  on an in-memory queue and returns. A background thread writes queued rows in batches.
  Nothing there raises into the hook; if the database is down the rows are dropped and the
  loss is logged (counts only, never patient data).
- ``save_feedback`` writes a batch of feedback items in one transaction, ignoring items
  already stored (same card, outcome and outcomeTimestamp). A database failure raises
  ``StoreUnavailable`` so the app answers 503 and the EHR retries.
- The schema is created and upgraded by ``cds_service.migrations`` when the store starts,
  or at the first use after the database comes back.

The patient id is never stored: only HMAC-SHA256(salt, patient id). The salt comes from
``CDS_PATIENT_HASH_SALT``, else from a random file created once in ``CDS_DATA_DIR``.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import logging
import os
import queue
import secrets
import threading
import time
from datetime import datetime, timezone
from itertools import zip_longest
from pathlib import Path

from sqlalchemy import (JSON, Boolean, Column, Connection, DateTime, Engine, Integer, MetaData,
                        String, Table, Text, create_engine, delete, event, insert, select,
                        update)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from cds_service import migrations
from cds_service.config import ConfigError, Settings

log = logging.getLogger(__name__)

SALT_FILE = "patient-hash-salt"
BATCH_SIZE = 500          # issued-card rows per write transaction
WRITE_DELAY = 0.5         # seconds a write waits for more calls: one transaction, not one per
                          # call, so the writer takes little CPU (and GIL) from the hook calls
QUEUE_LIMIT = 10_000      # hook calls waiting to be written; beyond this, records are dropped
CLOSE_TIMEOUT = 30.0      # seconds close() waits for the writer to drain the queue
REPLAY_PURGE_INTERVAL = 60.0  # seconds between deletions of expired JWT ids

# The current schema, for building queries. ``cds_service.migrations`` creates it; a test
# checks that the two agree.
metadata = MetaData()
issued_card = Table(
    "issued_card", metadata,
    Column("card_uuid", String(128), primary_key=True),
    Column("route", String(64), nullable=False),
    Column("rule_ids", String(1024), nullable=False),
    Column("hook_instance", String(128), nullable=False),
    Column("patient_hash", String(64), nullable=False),
    Column("issued_at", DateTime, nullable=False),
)
feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("card_uuid", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("accepted_suggestions", JSON, nullable=True),
    Column("override_reason_system", String(1024), nullable=True),
    Column("override_reason_code", String(256), nullable=True),
    Column("user_comment", Text, nullable=True),
    Column("outcome_timestamp", DateTime, nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("unknown_card", Boolean, nullable=False),
)
FEEDBACK_KEY = ["card_uuid", "outcome", "outcome_timestamp"]
jwt_replay = Table(
    "jwt_replay", metadata,
    Column("token_key", String(64), primary_key=True),
    Column("expires_at", DateTime, nullable=False),
)

_STOP = object()


class StoreUnavailable(RuntimeError):
    """The database cannot be reached; feedback answers 503 so the client retries."""


def utcnow() -> datetime:
    """Naive UTC: every timestamp column holds UTC without a zone, the same on every backend."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 timestamp as naive UTC (sub-microsecond digits are dropped)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).replace(tzinfo=None)


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
    except ArgumentError:
        raise ConfigError("CDS_DATABASE_URL is not a valid SQLAlchemy database URL") from None
    backend = url.get_backend_name()
    kwargs: dict = {"pool_pre_ping": True}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": 15}
        if not settings.database_url:  # the default file lives in the data dir
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
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _make_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        log.error("cannot create data directory %s: %s", data_dir, exc.strerror)


def load_or_create_salt(data_dir: Path) -> bytes:
    """The salt kept in ``data_dir``, created (random, mode 0600) on first use.

    Several workers may start together: each writes its own temporary file and links it into
    place; ``link`` fails if another worker won, and then everybody reads the winner's salt.
    """
    path = data_dir / SALT_FILE
    if not path.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = data_dir / f".{SALT_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(32) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    salt = path.read_text(encoding="ascii").strip()
    if not salt:
        raise ValueError(f"{path} is empty")
    return salt.encode()


def insert_ignore(conn: Connection, table: Table, rows: list[dict], key: list[str]) -> None:
    """Insert rows, silently skipping those whose ``key`` (a unique constraint) exists.

    SQLite and PostgreSQL both have ``ON CONFLICT DO NOTHING``, which is atomic even when
    several writers insert the same row at once; other databases get a savepoint per row.
    """
    if not rows:
        return
    name = conn.dialect.name
    if name in {"postgresql", "sqlite"}:
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        conn.execute(dialect_insert(table).on_conflict_do_nothing(index_elements=key), rows)
        return
    for row in rows:
        try:
            with conn.begin_nested():
                conn.execute(insert(table), row)
        except IntegrityError:
            pass


class Store:
    """Interface used by the app. ``record_cards`` must never raise or block the hook."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = make_engine(settings)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._salt: bytes | None = None
        self._salt_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_LIMIT)
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._hurry = threading.Event()  # set by flush() and close(): write without waiting
        self._last_replay_purge = 0.0
        if self.engine.dialect.name != "sqlite" and not settings.patient_hash_salt:
            log.warning("CDS_PATIENT_HASH_SALT is not set: each instance hashes patient ids "
                        "with the salt in its own data directory, so hashes differ between "
                        "instances; set the same secret on every instance")
        self.ensure_schema()
        atexit.register(self.close)

    # -- schema -------------------------------------------------------------------------

    def ensure_schema(self) -> bool:
        """Create or upgrade the schema once; False (logged) while the database is down."""
        if self._schema_ready:
            return True
        with self._schema_lock:
            if self._schema_ready:
                return True
            try:
                with self.engine.begin() as conn:
                    applied = migrations.migrate(conn)
            except SQLAlchemyError as exc:
                log.warning("database unavailable, schema not checked yet: %s", describe(exc))
                return False
            if applied:
                log.info("database schema upgraded to version %d", applied[-1])
            self._schema_ready = True
            return True

    # -- issued cards -------------------------------------------------------------------

    def patient_hash(self, patient_id: str) -> str:
        if self._salt is None:
            with self._salt_lock:
                if self._salt is None:
                    configured = self.settings.patient_hash_salt
                    self._salt = (configured.encode() if configured
                                  else load_or_create_salt(self.settings.data_dir))
        return hmac.new(self._salt, patient_id.encode(), hashlib.sha256).hexdigest()

    def record_cards(self, hook_instance: str, patient_id: str, cards: list[dict],
                     rule_ids: list[str]) -> None:
        """Queue the issued cards for writing (card uuid, route, rule id, hashed patient)."""
        rows: list[dict] = []
        try:
            if not cards:
                return
            if self._closed:
                log.warning("store closed: %d issued-card records not written", len(cards))
                return
            issued_at = utcnow()
            patient_hash = self.patient_hash(str(patient_id))
            for card, rules in zip_longest(cards, rule_ids or [], fillvalue=None):
                if not isinstance(card, dict) or not card.get("uuid"):
                    continue
                topic = (card.get("source") or {}).get("topic") or {}
                rows.append({"card_uuid": str(card["uuid"]),
                             "route": str(topic.get("code") or "unknown"),
                             "rule_ids": str(rules or ""),
                             "hook_instance": str(hook_instance),
                             "patient_hash": patient_hash,
                             "issued_at": issued_at})
            if rows:
                self._start_writer()
                self._queue.put_nowait(rows)
        except queue.Full:
            log.warning("issued-card queue full: %d records dropped", len(rows))
        except Exception as exc:  # never break the hook
            log.warning("issued-card records not queued: %s", type(exc).__name__)

    def _start_writer(self) -> None:
        if self._writer is not None and self._writer.is_alive() and self._pid == os.getpid():
            return
        with self._writer_lock:
            if self._pid != os.getpid():  # forked: the parent's thread and connections are not ours
                self._pid = os.getpid()
                self._queue = queue.Queue(maxsize=QUEUE_LIMIT)
                self._hurry = threading.Event()
                self._writer = None
                self.engine.dispose(close=False)
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                                name="cds-card-writer")
                self._writer.start()

    def _write_loop(self) -> None:
        while True:
            try:
                item = self._queue.get()
                if isinstance(item, list) and self._queue.empty():
                    # A quiet moment: let the calls of the next half second join this write
                    # (one transaction, no wake-up per call); flush() and close() cut the
                    # wait short. Under load the queue is never empty: no wait at all.
                    self._hurry.wait(WRITE_DELAY)
                    self._hurry.clear()
                rows: list[dict] = []
                markers: list[threading.Event] = []
                stop = False
                while True:
                    if item is _STOP:
                        stop = True
                    elif isinstance(item, threading.Event):
                        markers.append(item)
                    else:
                        rows.extend(item)
                    if stop or len(rows) >= BATCH_SIZE:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if rows:
                    self._write_cards(rows)
                for marker in markers:
                    marker.set()
                if stop:
                    return
            except Exception as exc:  # the writer must survive anything
                log.error("issued-card writer error: %s", type(exc).__name__)

    def _write_cards(self, rows: list[dict]) -> None:
        if not self.ensure_schema():
            log.warning("could not write %d issued-card records: database unavailable", len(rows))
            return
        try:
            with self.engine.begin() as conn:
                insert_ignore(conn, issued_card, rows, ["card_uuid"])
                # Feedback that arrived before its card was written is no longer unknown.
                conn.execute(update(feedback)
                             .where(feedback.c.card_uuid.in_([r["card_uuid"] for r in rows]),
                                    feedback.c.unknown_card.is_(True))
                             .values(unknown_card=False))
        except SQLAlchemyError as exc:
            log.warning("could not write %d issued-card records: %s", len(rows), describe(exc))

    def flush(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait until every record queued so far has been written (or given up on)."""
        writer = self._writer
        if writer is None or not writer.is_alive():
            return self._queue.empty()
        marker = threading.Event()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        self._hurry.set()
        return marker.wait(timeout)

    # -- JWT replay protection ----------------------------------------------------------

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Remember a token id until it expires; False if another call already used it.

        Shared by every worker and instance on the same database, unlike an in-process
        cache. Raises StoreUnavailable when the database cannot be reached.
        """
        key = hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()
        now = utcnow()
        until = datetime.fromtimestamp(expires_at, timezone.utc).replace(tzinfo=None)
        if not self.ensure_schema():
            raise StoreUnavailable("schema not ready")
        purge = time.monotonic() - self._last_replay_purge > REPLAY_PURGE_INTERVAL
        try:
            with self.engine.begin() as conn:
                if purge:
                    conn.execute(delete(jwt_replay).where(jwt_replay.c.expires_at < now))
                    self._last_replay_purge = time.monotonic()
                try:
                    with conn.begin_nested():
                        conn.execute(insert(jwt_replay).values(token_key=key, expires_at=until))
                except IntegrityError:
                    # Used before: refused, unless that use has expired (not yet purged).
                    reused = conn.execute(update(jwt_replay)
                                          .where(jwt_replay.c.token_key == key)
                                          .where(jwt_replay.c.expires_at < now)
                                          .values(expires_at=until))
                    return reused.rowcount == 1
                return True
        except SQLAlchemyError as exc:
            raise StoreUnavailable(describe(exc)) from None

    # -- feedback -----------------------------------------------------------------------

    def save_feedback(self, items: list[dict]) -> None:
        """Store a batch of validated feedback items in one transaction."""
        received_at = utcnow()
        rows: dict[tuple, dict] = {}
        for item in items:
            outcome_timestamp = parse_timestamp(item["outcomeTimestamp"])  # checked by feedback.py
            override = item.get("overrideReason") or {}
            reason = override.get("reason") or {}
            accepted = [s["id"] for s in item.get("acceptedSuggestions") or []]
            row = {"card_uuid": item["card"],
                   "outcome": item["outcome"],
                   "accepted_suggestions": accepted or None,
                   "override_reason_system": reason.get("system"),
                   "override_reason_code": reason.get("code"),
                   "user_comment": override.get("userComment"),
                   "outcome_timestamp": outcome_timestamp,
                   "received_at": received_at}
            rows.setdefault((row["card_uuid"], row["outcome"], outcome_timestamp), row)
        if not rows:
            return
        if not self.ensure_schema():
            raise StoreUnavailable("database unavailable")
        try:
            with self.engine.begin() as conn:
                uuids = sorted({row["card_uuid"] for row in rows.values()})
                known = set(conn.scalars(select(issued_card.c.card_uuid)
                                         .where(issued_card.c.card_uuid.in_(uuids))))
                for row in rows.values():
                    row["unknown_card"] = row["card_uuid"] not in known
                insert_ignore(conn, feedback, list(rows.values()), FEEDBACK_KEY)
        except SQLAlchemyError as exc:
            log.warning("feedback batch of %d items not stored: %s", len(rows), describe(exc))
            raise StoreUnavailable("database unavailable") from None

    # -- shutdown -----------------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued, stop the writer and release the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        writer = self._writer
        if writer is not None and writer.is_alive() and self._pid == os.getpid():
            try:
                self._queue.put(_STOP, timeout=CLOSE_TIMEOUT)
                self._hurry.set()
                writer.join(CLOSE_TIMEOUT)
            except queue.Full:
                log.warning("issued-card writer did not drain its queue before shutdown")
        left = self._queue.qsize()
        if left:
            log.warning("%d queued issued-card batches not written at shutdown", left)
        self.engine.dispose()
