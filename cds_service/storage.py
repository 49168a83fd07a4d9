"""Durable record of issued cards and clinician feedback (SQLAlchemy; SQLite or PostgreSQL).

- ``record_cards`` runs after each hook response: it hashes the patient id and hands the
  rows to a ``CardWriter``, which writes them in batches from a background thread.
  Nothing there raises into the hook; if the database is down the rows are dropped and the
  loss is logged (counts only, never patient data).
- ``save_feedback`` writes a batch of feedback items in one transaction, ignoring items
  already stored (same card, outcome and outcomeTimestamp). A database failure raises
  ``StoreUnavailable`` so the app answers 503 and the EHR retries.
- ``save_feedback`` also records a suppression when a card is overridden with a reason its
  route's ``suppression`` block names; ``active_suppressions`` reads them on the hook's
  path (one indexed query; if the database cannot be read, nothing is suppressed: fail
  open, logged). Feedback may arrive before its card's record is written: it first waits
  briefly for this process's queued records, and feedback still unknown then (the card came
  from another instance, or its write was slow) is adopted when the card is written, its
  suppression included.
- ``first_use`` remembers JWT ids for replay protection, shared by every worker.
- The schema is created and upgraded by ``cds_service.migrations`` when the store starts,
  or at the first use after the database comes back (tables: ``cds_service.database``).

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
from datetime import UTC, datetime, timedelta
from itertools import zip_longest
from pathlib import Path

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from cds_service import migrations
from cds_service.card_writer import CLOSE_TIMEOUT, CardWriter
from cds_service.config import Settings
from cds_service.database import (
    FEEDBACK_KEY,
    READ_ONLY,
    StoreUnavailable,
    describe,
    feedback,
    insert_ignore,
    issued_card,
    jwt_replay,
    make_engine,
    parse_timestamp,
    suppression,
    utcnow,
)
from cds_service.store_health import SqliteWatch

log = logging.getLogger(__name__)

SALT_FILE = "patient-hash-salt"
REPLAY_PURGE_INTERVAL = 60.0  # seconds between deletions of expired JWT ids
SUPPRESSION_RETRY = 30.0  # after a failed suppression lookup, seconds without lookups (fail open)
FEEDBACK_FLUSH_WAIT = 2.0  # seconds feedback waits for this process's queued card records
URGENT_MAX_DAYS = 1  # a critical card is never suppressed for longer, whatever the policy


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


class Store:
    """Interface used by the app. ``record_cards`` must never raise or block the hook."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = make_engine(settings)
        self._watch = SqliteWatch(self.engine)  # before the first connection is opened
        self._failed = False  # the last operation failed: check the data dir before the next
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._salt: bytes | None = None
        self._salt_lock = threading.Lock()
        self._writer = CardWriter(lambda rows: self._write_cards(rows))
        self._pid = os.getpid()
        self._closed = False
        self._last_replay_purge = 0.0
        # Route code -> {override reason code: days}; set by the app from the rule files
        # (service.suppression_policy). Critical routes are capped at URGENT_MAX_DAYS.
        self.suppression_policy: dict[str, dict[str, int]] = {}
        self.urgent_routes: set[str] = set()
        self.clock = utcnow  # naive UTC now; tests may replace it
        self._lookup_paused_until = 0.0
        if (
            self.engine.dialect.name != "sqlite"
            and not settings.patient_hash_salt.get_secret_value()
        ):
            log.warning(
                "CDS_PATIENT_HASH_SALT is not set: each instance hashes patient ids "
                "with the salt in its own data directory, so hashes differ between "
                "instances; set the same secret on every instance"
            )
        self.ensure_schema()
        atexit.register(self.close)

    # -- schema -------------------------------------------------------------------------

    def ensure_schema(self) -> bool:
        """Create or upgrade the schema once; False (logged) while the database is down."""
        if self._failed:
            self._prepare_reopen()
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
                self._failed = True
                return False
            if applied:
                log.info("database schema upgraded to revision %s", applied[-1])
            self._schema_ready = True
            return True

    # -- issued cards -------------------------------------------------------------------

    def patient_hash(self, patient_id: str) -> str:
        if self._salt is None:
            with self._salt_lock:
                if self._salt is None:
                    configured = self.settings.patient_hash_salt.get_secret_value()
                    self._salt = (
                        configured.encode()
                        if configured
                        else load_or_create_salt(self.settings.data_dir)
                    )
        return hmac.new(self._salt, patient_id.encode(), hashlib.sha256).hexdigest()

    def fingerprint_key(self, fingerprint: str | None) -> str | None:
        """The stored form of an evidence fingerprint: salted like the patient hash, so
        the evidence cannot be guessed from the database."""
        if not fingerprint:
            return None
        return self.patient_hash("fingerprint\x00" + fingerprint)

    def record_cards(
        self,
        hook_instance: str,
        patient_id: str,
        cards: list[dict],
        rule_ids: list[str],
        fingerprints: list[str] | None = None,
        suppressed: list[dict] | None = None,
    ) -> None:
        """Queue the issued cards for writing (card uuid, route, rule id, hashed patient,
        fingerprint); ``suppressed`` cards (left out of the response) are written too,
        flagged, so the report can count them."""
        rows: list[dict] = []
        try:
            suppressed = suppressed or []
            entries = [
                (card, rules, fp, False)
                for card, rules, fp in zip_longest(
                    cards or [], rule_ids or [], fingerprints or [], fillvalue=None
                )
            ]
            entries += [
                (s.get("card"), s.get("rules"), s.get("fingerprint"), True) for s in suppressed
            ]
            if not entries:
                return
            if self._closed:
                log.warning("store closed: %d issued-card records not written", len(entries))
                return
            issued_at = utcnow()
            patient_hash = self.patient_hash(str(patient_id))
            for card, rules, fp, left_out in entries:
                if not isinstance(card, dict) or not card.get("uuid"):
                    continue
                topic = (card.get("source") or {}).get("topic") or {}
                indicator = card.get("indicator")
                rows.append(
                    {
                        "card_uuid": str(card["uuid"]),
                        "route": str(topic.get("code") or "unknown"),
                        "rule_ids": str(rules or ""),
                        "hook_instance": str(hook_instance),
                        "patient_hash": patient_hash,
                        "issued_at": issued_at,
                        "fingerprint": self.fingerprint_key(fp),
                        "indicator": str(indicator)[:16] if indicator else None,
                        "suppressed": left_out,
                    }
                )
            if rows:
                if self._pid != os.getpid():  # forked: the parent's connections are not ours
                    self._pid = os.getpid()
                    self.engine.dispose(close=False)
                self._writer.put(rows)
        except queue.Full:
            log.warning("issued-card queue full: %d records dropped", len(rows))
        except Exception as exc:  # never break the hook
            log.warning("issued-card records not queued: %s", type(exc).__name__)

    def _write_cards(self, rows: list[dict]) -> None:
        if not self.ensure_schema():
            log.warning("could not write %d issued-card records: database unavailable", len(rows))
            return
        try:
            with self.engine.begin() as conn:
                info = conn.connection.info
                insert_ignore(conn, issued_card, rows, ["card_uuid"])
                self._adopt_early_feedback(conn, rows)
        except SQLAlchemyError as exc:
            self._note_failure()
            log.warning("could not write %d issued-card records: %s", len(rows), describe(exc))
            return
        if not self._watch.same_file(info):
            self._file_lost()
            log.error(
                "%d issued-card records went to a database file that is no longer at "
                "its path: lost",
                len(rows),
            )
            return
        self._watch.maybe_checkpoint()

    def _adopt_early_feedback(self, conn, rows: list[dict]) -> None:
        """Within the card write's transaction: feedback that arrived before its card was
        written (another instance, or a write slower than the feedback's wait) is no longer
        unknown, and a suppressing override among it takes effect now, as it would have had
        the card been known (its expiry still counts from the override)."""
        uuids = [r["card_uuid"] for r in rows]
        early = [
            r._asdict()
            for r in conn.execute(
                select(
                    feedback.c.card_uuid,
                    feedback.c.outcome,
                    feedback.c.override_reason_code,
                    feedback.c.outcome_timestamp,
                    feedback.c.received_at,
                ).where(feedback.c.card_uuid.in_(uuids), feedback.c.unknown_card.is_(True))
            )
        ]
        if not early:
            return
        conn.execute(
            update(feedback)
            .where(feedback.c.card_uuid.in_(uuids), feedback.c.unknown_card.is_(True))
            .values(unknown_card=False)
        )
        if self.suppression_policy:
            self._suppress(conn, early, {r["card_uuid"]: r for r in rows}, utcnow())

    def flush(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait until every record queued so far has been written (or given up on)."""
        return self._writer.flush(timeout)

    # -- suppression --------------------------------------------------------------------

    def active_suppressions(self, patient_id: str, routes: list[str]) -> dict[str, dict]:
        """Route -> {"fingerprint", "indicator"} of the suppressions holding now for this
        patient and these routes: one query on the primary key. Empty (cards are shown)
        when the database cannot be read; then lookups pause for SUPPRESSION_RETRY seconds
        so an outage does not slow every hook call."""
        wanted = sorted({r for r in routes if r in self.suppression_policy})
        if not wanted or self._closed:
            return {}
        if time.monotonic() < self._lookup_paused_until:
            return {}
        try:
            if not self._schema_ready and not self.ensure_schema():
                raise StoreUnavailable("schema not ready")
            key = self.patient_hash(str(patient_id))
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self.engine.dispose(close=False)
            with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
                found = conn.execute(
                    select(
                        suppression.c.route, suppression.c.fingerprint, suppression.c.indicator
                    ).where(
                        suppression.c.patient_hash == key,
                        suppression.c.route.in_(wanted),
                        suppression.c.expires_at > self.clock(),
                    )
                ).all()
        except (SQLAlchemyError, StoreUnavailable, OSError, ValueError) as exc:
            self._lookup_paused_until = time.monotonic() + SUPPRESSION_RETRY
            log.warning(
                "suppressions not read (cards shown unsuppressed for %.0f s): %s",
                SUPPRESSION_RETRY,
                describe(exc) if isinstance(exc, SQLAlchemyError) else type(exc).__name__,
            )
            return {}
        return {
            route: {"fingerprint": fp, "indicator": indicator} for route, fp, indicator in found
        }

    def _suppress(
        self, conn, rows: list[dict], cards: dict[str, dict], received_at: datetime
    ) -> None:
        """Within save_feedback's transaction: an override with a suppressing reason
        starts (or renews) a suppression; a later acceptance of that card ends it."""
        for row in sorted(rows, key=lambda r: r["outcome_timestamp"]):
            card = cards.get(row["card_uuid"])
            if card is None:
                continue
            if row["outcome"] == "accepted":
                conn.execute(
                    delete(suppression).where(
                        suppression.c.card_uuid == row["card_uuid"],
                        suppression.c.suppressed_at <= row["outcome_timestamp"],
                    )
                )
                continue
            if row["outcome"] != "overridden":
                continue
            days = self.suppression_policy.get(card["route"], {}).get(
                row["override_reason_code"] or ""
            )
            if not days:
                continue
            if card["route"] in self.urgent_routes or card["indicator"] == "critical":
                days = min(days, URGENT_MAX_DAYS)
            # A client clock ahead: from the receipt (of this item, when adopted late).
            start = min(row["outcome_timestamp"], row.get("received_at") or received_at)
            values = {
                "card_uuid": row["card_uuid"],
                "reason_code": row["override_reason_code"],
                "fingerprint": card["fingerprint"],
                "indicator": card["indicator"],
                "suppressed_at": row["outcome_timestamp"],
                "expires_at": start + timedelta(days=days),
            }
            key = {"patient_hash": card["patient_hash"], "route": card["route"]}
            name = conn.dialect.name
            if name in {"postgresql", "sqlite"}:
                if name == "postgresql":
                    from sqlalchemy.dialects.postgresql import insert as dialect_insert
                else:
                    from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
                statement = dialect_insert(suppression).values(**key, **values)
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=list(key),
                        set_=values,
                        # Only a later override replaces one (feedback can be adopted late).
                        where=suppression.c.suppressed_at <= statement.excluded.suppressed_at,
                    )
                )
            else:
                conn.execute(
                    delete(suppression).where(
                        suppression.c.patient_hash == key["patient_hash"],
                        suppression.c.route == key["route"],
                    )
                )
                conn.execute(insert(suppression).values(**key, **values))

    # -- JWT replay protection ----------------------------------------------------------

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Remember a token id until it expires; False if another call already used it.

        Shared by every worker and instance on the same database, unlike an in-process
        cache. Raises StoreUnavailable when the database cannot be reached.
        """
        key = hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()
        now = utcnow()
        until = datetime.fromtimestamp(expires_at, UTC).replace(tzinfo=None)
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
                    reused = conn.execute(
                        update(jwt_replay)
                        .where(jwt_replay.c.token_key == key)
                        .where(jwt_replay.c.expires_at < now)
                        .values(expires_at=until)
                    )
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
            row = {
                "card_uuid": item["card"],
                "outcome": item["outcome"],
                "accepted_suggestions": accepted or None,
                "override_reason_system": reason.get("system"),
                "override_reason_code": reason.get("code"),
                "user_comment": override.get("userComment"),
                "outcome_timestamp": outcome_timestamp,
                "received_at": received_at,
            }
            rows.setdefault((row["card_uuid"], row["outcome"], outcome_timestamp), row)
        if not rows:
            return
        if not self.ensure_schema():
            raise StoreUnavailable("database unavailable")
        # The record of a card this process issued a moment ago may still be queued (the
        # writer batches in the background): let it reach the database first, so the
        # override applies at once. Bounded; if the wait runs out, or the card was issued by
        # another instance, the card write adopts the feedback (_adopt_early_feedback).
        self._writer.flush(FEEDBACK_FLUSH_WAIT)
        try:
            with self.engine.begin() as conn:
                info = conn.connection.info
                uuids = sorted({row["card_uuid"] for row in rows.values()})
                known = {
                    r.card_uuid: r._asdict()
                    for r in conn.execute(
                        select(
                            issued_card.c.card_uuid,
                            issued_card.c.route,
                            issued_card.c.patient_hash,
                            issued_card.c.fingerprint,
                            issued_card.c.indicator,
                        ).where(issued_card.c.card_uuid.in_(uuids))
                    )
                }
                for row in rows.values():
                    row["unknown_card"] = row["card_uuid"] not in known
                insert_ignore(conn, feedback, list(rows.values()), FEEDBACK_KEY)
                if self.suppression_policy:
                    self._suppress(conn, list(rows.values()), known, received_at)
        except SQLAlchemyError as exc:
            self._note_failure()
            log.warning("feedback batch of %d items not stored: %s", len(rows), describe(exc))
            raise StoreUnavailable("database unavailable") from None
        if not self._watch.same_file(info):  # committed into a deleted or replaced file
            self._file_lost()
            log.error(
                "feedback batch of %d items not stored: the database file is no longer "
                "at its path (data directory removed or file replaced)",
                len(rows),
            )
            raise StoreUnavailable("database file missing")
        self._watch.maybe_checkpoint()

    # -- faults and readiness -----------------------------------------------------------

    def _note_failure(self) -> None:
        """After a failed operation: re-check the schema (the file may be new) next time."""
        self._failed = True
        self._schema_ready = False

    def _file_lost(self) -> None:
        self._note_failure()
        self._watch.reset()  # connections to the unlinked file must not be used again

    def _prepare_reopen(self) -> None:
        """Before retrying after a failure: the default data dir (and the salt kept in it)
        is recreated as at start-up, so a removed directory does not need a restart."""
        self._failed = False
        if self.settings.database_url or not self._watch.enabled:
            return
        data_dir = self.settings.data_dir
        if data_dir.is_dir():
            return
        try:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            log.warning(
                "data directory %s was missing: recreated (a new, empty database)", data_dir
            )
            if self._salt is not None and not self.settings.patient_hash_salt:
                path = data_dir / SALT_FILE
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="ascii") as out:
                    out.write(self._salt.decode() + "\n")
        except OSError as exc:
            log.error(
                "data directory %s is missing and cannot be created: %s", data_dir, exc.strerror
            )

    def health(self) -> tuple[bool, dict[str, str]]:
        """(ready, checks) for the readiness endpoint: can feedback be stored right now?"""
        if self._failed:
            self._prepare_reopen()
        problem = "database unavailable" if not self.ensure_schema() else self._watch.problem()
        if problem is not None:
            self._file_lost()  # reopen (recreating the default data dir) on the next call
        else:
            try:
                with self.engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE takes the write lock
                    conn.execute(select(feedback.c.id).limit(1)).all()
                    info = conn.connection.info
                if not self._watch.same_file(info):
                    self._file_lost()
                    problem = "database file is no longer at its path"
            except SQLAlchemyError as exc:
                self._note_failure()
                problem = describe(exc)
        if problem is not None:
            log.warning("store not ready: %s", problem)
            return False, {"store": problem}
        return True, {"store": "ok"}

    # -- shutdown -----------------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued, stop the writer and release the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._writer.close()
        self.engine.dispose()
