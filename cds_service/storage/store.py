"""The store the app uses: issued cards, suppressions, feedback and JWT replay, on one
database (SQLAlchemy; SQLite or PostgreSQL), plus readiness and shutdown.

Each part is a small class of its own module (issued.py, suppressions.py, feedback.py,
replay.py) on the shared state of base.py; ``Store`` puts them together. The schema is
created and upgraded by ``migrations`` when the store starts, or at the first use after the
database comes back (tables: ``database``).
"""

from __future__ import annotations

import atexit
import logging

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from cds_service.config import Settings
from cds_service.storage.database import describe, feedback
from cds_service.storage.feedback import FeedbackStore
from cds_service.storage.issued import IssuedCards
from cds_service.storage.replay import ReplayGuard
from cds_service.storage.suppressions import Suppressions

log = logging.getLogger(__package__)  # "cds_service.storage", as before the split


class Store(IssuedCards, Suppressions, FeedbackStore, ReplayGuard):
    """Interface used by the app. ``save_issued_cards`` must never raise or block the hook."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
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

    def health(self) -> tuple[bool, dict[str, str]]:
        """(ready, checks) for the readiness endpoint: can feedback be stored right now?"""
        if self._failed:
            self._prepare_reopen()
        problem = "database unavailable" if not self.ensure_schema() else self._watch.problem()
        if problem is not None:
            self._file_lost()  # reopen (recreating the default data dir) on the next call
        else:
            problem = self._try_write_lock()
        if problem is not None:
            log.warning("store not ready: %s", problem)
            return False, {"store": problem}
        return True, {"store": "ok"}

    def _try_write_lock(self) -> str | None:
        """Whether a write transaction can start on the file at the path (None: it can)."""
        try:
            with self.engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE takes the write lock
                conn.execute(select(feedback.c.id).limit(1)).all()
                info = conn.connection.info
        except SQLAlchemyError as exc:
            self._note_failure()
            return describe(exc)
        if not self._watch.same_file(info):
            self._file_lost()
            return "database file is no longer at its path"
        return None

    def close(self) -> None:
        """Write what is queued, stop the writer and release the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._writer.close()
        self.release_token_connection()
        self.engine.dispose()
