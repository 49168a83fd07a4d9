"""What every part of the store shares: the engine, the schema, and recovering from faults.

A failed operation marks the store failed: before the next one the schema is checked again
(the database file may be new) and the default data directory, if it was removed, is
recreated as at start-up, so neither needs a restart.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from cds_service.config import Settings
from cds_service.storage import migrations
from cds_service.storage.card_writer import CardWriter
from cds_service.storage.database import describe, make_engine, utcnow
from cds_service.storage.health import SqliteWatch
from cds_service.storage.salt import PatientHasher
from cds_service.storage.spool import CardSpool
from cds_service.storage.spool_files import directory_for

log = logging.getLogger(__package__)  # "cds_service.storage", as before the split


@dataclass(frozen=True)
class SuppressionTerms:
    """Which overrides suppress a card, and for how long (see suppressions.suppress)."""

    policy: dict[str, dict[tuple[str, str], int]]  # route -> {(system, code): days}
    urgent_routes: set[str]  # capped at URGENT_MAX_DAYS
    window: timedelta  # feedback received later than this after its card suppresses nothing


class StoreBase:
    """The state the store's parts (issued cards, suppressions, feedback, replay) share."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = make_engine(settings)
        self._watch = SqliteWatch(self.engine)  # before the first connection is opened
        self._failed = False  # the last operation failed: check the data dir before the next
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._hasher = PatientHasher(settings)
        # Card records wait in an on-disk spool (spool.py) until the database has them.
        self._writer = CardWriter(
            lambda rows: self._write_cards(rows),
            CardSpool(directory_for(settings), settings.card_spool_max_bytes),
        )
        self._pid = os.getpid()
        self._closed = False
        # Route code -> {(override reason system, code): days}; set by the app from the rule
        # files (service.suppression_policy; empty when suppression is not allowed, see
        # Settings.suppression_allowed). Critical routes are capped at URGENT_MAX_DAYS.
        self.suppression_policy: dict[str, dict[tuple[str, str], int]] = {}
        self.urgent_routes: set[str] = set()
        self.clock = utcnow  # naive UTC now; tests may replace it

    def _write_cards(self, rows: list[dict]) -> bool:  # the card writer's work (issued.py)
        raise NotImplementedError

    def suppression_terms(self) -> SuppressionTerms:
        """What an override must meet to suppress a card (suppressions.suppress)."""
        return SuppressionTerms(
            self.suppression_policy,
            self.urgent_routes,
            timedelta(hours=self.settings.feedback_window_hours),
        )

    def patient_hash(self, patient_id: str) -> str:
        return self._hasher.patient_hash(patient_id)

    def fingerprint_key(self, fingerprint: str | None) -> str | None:
        """The stored form of an evidence fingerprint: salted like the patient hash, so
        the evidence cannot be guessed from the database."""
        return self._hasher.fingerprint_key(fingerprint)

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

    def _after_fork(self) -> None:
        """In a forked child (gunicorn workers) the parent's connections are not ours."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self.engine.dispose(close=False)

    def _note_failure(self) -> None:
        """After a failed operation: re-check the schema (the file may be new) next time,
        and trust no copy of its rows."""
        self._failed = True
        self._schema_ready = False
        self._drop_copy()

    def _drop_copy(self) -> None:
        """Parts that keep a copy of database rows (suppressions.py) drop it here."""

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
            self._hasher.restore_file(data_dir)
        except OSError as exc:
            log.error(
                "data directory %s is missing and cannot be created: %s", data_dir, exc.strerror
            )
