"""Connection handling that notices storage faults, so the store recovers without a restart.

- Any SQLite error that means "this connection can no longer write here" (read-only file,
  disk I/O error, file gone, disk full, schema gone) is treated as a disconnect: SQLAlchemy
  then drops every pooled connection and the next use opens the file afresh, so a file that
  was read-only and is writable again works again (a connection opened while the file was
  read-only stays read-only for life otherwise).
- The SQLite file is watched: each connection remembers the file (device, inode) it opened;
  after a write the store checks that this is still the file at the database path. A data
  directory deleted while running leaves SQLite writing into an unlinked file: such a write
  is answered 503 (and logged), never acknowledged and then lost.
- The WAL is bounded: ``wal_autocheckpoint`` and ``journal_size_limit`` on every
  connection, and a ``wal_checkpoint(TRUNCATE)`` at most every ``CHECKPOINT_INTERVAL``
  seconds, so a WAL that grew (say while the disk was full) gives its space back.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

FILE_KEY = "cds_sqlite_file"  # connection-record info: (st_dev, st_ino) opened
WAL_AUTOCHECKPOINT_PAGES = 1000  # SQLite's default, stated so it cannot be turned off
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024  # bytes a WAL is truncated to after a checkpoint
CHECKPOINT_INTERVAL = 60.0  # seconds between TRUNCATE checkpoints
_RECONNECT_ON = (
    "readonly database",
    "disk i/o error",
    "unable to open database file",
    "database or disk is full",
    "no such table",
    "disk image is malformed",
    "file is not a database",
)


def file_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class SqliteWatch:
    """The database file of a SQLite engine, and whether connections still point at it."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.path = engine.url.database or ""
        self.enabled = (
            engine.dialect.name == "sqlite"
            and self.path not in ("", ":memory:")
            and not self.path.startswith("file:")
        )
        self._last_checkpoint = time.monotonic()
        self._checkpoint_lock = threading.Lock()
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", self._on_connect)
            event.listen(engine, "handle_error", self._on_error)

    def _on_connect(self, dbapi_connection, record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            cursor.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        finally:
            cursor.close()
        if self.enabled:
            record.info[FILE_KEY] = file_identity(self.path)

    @staticmethod
    def _on_error(context) -> None:
        message = str(context.original_exception).lower()
        if any(text in message for text in _RECONNECT_ON):
            context.is_disconnect = True  # the whole pool is replaced

    def same_file(self, dbapi_info: dict) -> bool:
        """Whether the connection with this ``info`` still writes to the file at the path."""
        if not self.enabled:
            return True
        opened = dbapi_info.get(FILE_KEY)
        return opened is not None and opened == file_identity(self.path)

    def problem(self) -> str | None:
        """What is wrong with the file right now (for readiness), or None."""
        if not self.enabled:
            return None
        directory = os.path.dirname(self.path) or "."
        if not os.path.isdir(directory):
            return "database directory is missing"
        if not os.path.exists(self.path):
            return "database file is missing"
        if not os.access(self.path, os.W_OK) or not os.access(directory, os.W_OK):
            return "database file or directory is not writable"
        return None

    def reset(self) -> None:
        """Drop every pooled connection: the next use opens the file afresh."""
        self.engine.dispose()

    def maybe_checkpoint(self) -> None:
        """A TRUNCATE checkpoint, at most every CHECKPOINT_INTERVAL seconds (never raises)."""
        if self.engine.dialect.name != "sqlite":
            return
        if time.monotonic() - self._last_checkpoint < CHECKPOINT_INTERVAL:
            return
        if not self._checkpoint_lock.acquire(blocking=False):
            return
        try:
            self._last_checkpoint = time.monotonic()
            self.checkpoint()
        finally:
            self._checkpoint_lock.release()

    def checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it to zero bytes (True when done)."""
        try:
            raw = self.engine.raw_connection()
        except Exception as exc:
            log.warning("WAL checkpoint skipped: %s", type(exc).__name__)
            return False
        try:
            cursor = raw.cursor()
            try:
                busy, _, _ = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                cursor.close()
            return busy == 0
        except Exception as exc:
            log.warning("WAL checkpoint failed: %s", type(exc).__name__)
            return False
        finally:
            raw.close()
