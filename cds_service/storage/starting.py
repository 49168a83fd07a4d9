"""The store the app starts with: the database is opened off the first answer's path.

Opening the store means importing SQLAlchemy and Alembic and checking (on a fresh data
directory: creating) the schema, ~0.2-0.5 s of a worker's start-up that no hook answer
needs. ``StartingStore`` answers the hook's path at once and opens the real ``Store``
(store.py) in the background: right after the first answer is sent, when something needs
the database, or ``OPEN_DELAY`` seconds after the app was created, whichever comes first.

Nothing is lost or acknowledged early while it opens: issued cards are kept in memory
(with the time they were issued) and handed to the store once it is open, whose card spool
keeps them on disk until the database has them (a call held here when the open fails, or
past ``PENDING_LIMIT``, is dropped: logged and counted); feedback and JWT
replay checks wait for it (``OPEN_WAIT``, then 503); readiness says "starting"; a
suppression lookup waits too, unless no database file exists yet (then none can hold).
Everything else is passed to the open store.
"""

from __future__ import annotations

import atexit
import logging
import threading
from contextlib import closing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cds_service.config import Settings
from cds_service.protocol.feedback import ANONYMOUS_CLIENT
from cds_service.storage.card_batches import drop
from cds_service.storage.card_rows import card_rows
from cds_service.storage.salt import PatientHasher
from cds_service.storage.spool import CardSpool
from cds_service.storage.spool_files import directory_for

if TYPE_CHECKING:
    from cds_service.storage.store import Store

log = logging.getLogger(__package__)

OPEN_DELAY = 1.0  # seconds after start-up the store opens at the latest (no traffic)
OPEN_WAIT = 10.0  # seconds feedback, JWT replay checks and lookups wait for the open
READY_WAIT = 1.0  # seconds /readyz waits for the open before answering "starting"
CLOSE_WAIT = 20.0  # seconds shutdown waits for an open still under way (gunicorn: 30 s)
PENDING_LIMIT = (
    2_000  # hook calls whose cards wait for the open (~10 MB at most); beyond, dropped (logged)
)
SQLITE_FILE = "cds.sqlite3"  # the default database in CDS_DATA_DIR (config.effective_database_url)
# ``Suppressions._query_suppressions``'s queries: a patient's rows, all clients' or one's.
_PEEK_SQL = (
    "SELECT route, fingerprint, indicator, expires_at, client FROM suppression "
    "WHERE patient_hash = ?"
)
_PEEK_CLIENT_SQL = _PEEK_SQL + " AND client = ?"
_POLICY = ("suppression_policy", "urgent_routes")  # set by the app, passed to the store
_OWN = {
    "settings",
    "_hasher",
    "_store",
    "_failure",
    "_lock",
    "_opened",
    "_opener",
    "_pending",
    "_spool",
    "_timer",
}
# One open at a time in a process: Alembic keeps the migration being run in module globals
# (``alembic.context``), so two stores migrating at once (tests create many apps) collide.
_OPEN_LOCK = threading.Lock()


class StartingStore:
    """``Store``'s interface; the real store is opened once, in the background."""

    def __init__(self, settings: Settings, open_delay: float | None = OPEN_DELAY):
        self.settings = settings
        self._hasher = PatientHasher(settings)  # the same salt as the store's (salt.py)
        self.suppression_policy: dict[str, dict[tuple[str, str], int]] = {}
        self.urgent_routes: set[str] = set()
        self._store: Store | None = None
        self._failure: str | None = None
        self._lock = threading.Lock()
        self._opened = threading.Event()  # set when the open finished (or failed)
        self._opener: threading.Thread | None = None
        self._pending: list[tuple] = []  # calls before the open the spool could not keep
        self._spool: CardSpool | None = None  # records of calls before the open
        self._timer: threading.Timer | None = None
        if open_delay is not None:
            self._timer = threading.Timer(open_delay, self.start)
            self._timer.daemon = True
            self._timer.start()
        atexit.register(self.close)  # cards kept for a store not open yet are written too

    def __setattr__(self, name: str, value: Any) -> None:
        """The policy is kept here and passed on; anything else (a test's ``clock``) is
        set on the open store."""
        if name in _OWN:
            object.__setattr__(self, name, value)
            return
        if name not in _POLICY:
            setattr(self._open_store(None), name, value)
            return
        object.__setattr__(self, name, value)
        if self.__dict__.get("_store") is not None:
            setattr(self._store, name, value)

    # ------------------------------------------------------------------ opening

    def start(self) -> None:
        """Open the store in the background (once; later calls do nothing)."""
        with self._lock:
            if self._opener is not None:
                return
            self._opener = threading.Thread(target=self._open, daemon=True, name="cds-store-open")
            self._opener.start()

    def _open(self) -> None:
        try:
            from cds_service.storage.store import Store

            with _OPEN_LOCK:
                store = Store(self.settings)
            for name in _POLICY:
                setattr(store, name, getattr(self, name))
        except Exception as exc:  # ConfigError (an unusable CDS_DATABASE_URL) and the like
            self._failure = f"{type(exc).__name__}: {exc}"
            log.error("the store could not be opened: %s", self._failure)
            self._opened.set()
            return
        with self._lock:  # cards issued meanwhile go first, in the order they were issued
            pending, self._pending = self._pending, []
            for args, kwargs in pending:
                store.save_issued_cards(*args, **kwargs)
            spool, self._spool = self._spool, None
            if spool is not None:  # its files let go, the store's card writer takes them over
                spool.close()
                store._writer.adopt()
            self._store = store  # last: a flush of the open store now covers those records
        self._opened.set()

    def wait(self, timeout: float | None = OPEN_WAIT) -> Store | None:
        """The open store, waiting up to ``timeout`` for it (None: not open, or it failed)."""
        if self._store is None:
            self.start()
            self._opened.wait(timeout)
        return self._store

    def _open_store(self, timeout: float | None = OPEN_WAIT) -> Store:
        from cds_service.storage.database import StoreUnavailable

        store = self.wait(timeout)
        if store is None:
            raise StoreUnavailable(self._failure or "store still starting")
        return store

    def __getattr__(self, name: str) -> Any:
        """Anything else (the engine, ``ensure_schema``, ``patient_hash``, ``clock`` ...)
        is the open store's: waits for the open, as the eager store did at start-up."""
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._open_store(None), name)

    # ------------------------------------------------------------------ the app's calls

    def save_issued_cards(
        self,
        hook_instance: str,
        patient_id: str,
        cards: list[dict],
        rule_ids: list[str],
        fingerprints: list[str] | None = None,
        suppressed: list[dict] | None = None,
        issued_at: datetime | None = None,
        client: str = ANONYMOUS_CLIENT,
    ) -> None:
        """Never raises or blocks. Before the open the call's records go to the card spool,
        as the open store's would (feedback, or another worker after a kill, finds them
        there), else the call is kept in memory; the open store takes both over."""
        call = (hook_instance, patient_id, cards, rule_ids, fingerprints, suppressed)
        store = self._store
        if store is None:
            with self._lock:
                store = self._store
                if store is None:
                    self._keep(call, issued_at or datetime.now(UTC).replace(tzinfo=None), client)
            if store is None:
                self.start()  # the first answer: the database opens now
                return
        store.save_issued_cards(*call, issued_at=issued_at, client=client)

    def _keep(self, call: tuple, issued_at: datetime, client: str) -> None:
        """Before the open (under the lock): spool the call's records, else hold the call."""
        try:
            hook_instance, patient_id, cards, rule_ids, fingerprints, suppressed = call
            rows = card_rows(
                self._hasher,
                hook_instance,
                patient_id,
                cards,
                rule_ids,
                fingerprints,
                suppressed,
                issued_at,
                client,
            )
            if not rows:
                return
            if self._spool is None:
                maximum = self.settings.card_spool_max_bytes
                self._spool = CardSpool(directory_for(self.settings), maximum)
            self._spool.append(rows)
            return
        except Exception as exc:  # SpoolFull, OSError (no disk), a salt that cannot be read
            log.warning("issued-card records not spooled before the open: %s", type(exc).__name__)
        kept = (call, {"issued_at": issued_at, "client": client})
        if len(self._pending) >= PENDING_LIMIT or self._failure is not None:
            drop(_records([kept]), "the store is not open and the spool cannot keep them")
        else:
            self._pending.append(kept)

    def active_suppressions(
        self, patient_id: str, routes: list[str], client: str | None = None
    ) -> dict[str, dict]:
        store = self._store
        if store is None:
            if not any(r in self.suppression_policy for r in routes) or self._no_database():
                return {}
            if not self.settings.database_url.get_secret_value():
                found = self._peek(patient_id, routes, client)
                if found is not None:
                    return found
            store = self.wait()
            if store is None:
                log.warning("suppressions not read (cards shown unsuppressed): store not open")
                return {}
        return store.active_suppressions(patient_id, routes, client)

    def fingerprint_key(self, fingerprint: str | None) -> str | None:
        """As the store's (same salt), so a suppression found by ``_peek`` is compared
        without waiting for the open, and a failed open cannot turn a hook call into 503."""
        return self._hasher.fingerprint_key(fingerprint)

    def _peek(
        self, patient_id: str, routes: list[str], client: str | None
    ) -> dict[str, dict] | None:
        """Before the store is open, the default SQLite file read with the standard library
        (a few ms; the store needs SQLAlchemy, ~0.2 s, so a restart's first answers would
        wait for it): what the open store would answer (``Suppressions``). None when the
        file cannot be read this way; then the caller waits for the store."""
        import sqlite3

        wanted = {r for r in routes if r in self.suppression_policy}
        uri = (self.settings.data_dir / SQLITE_FILE).resolve().as_uri() + "?mode=ro"
        try:
            key = self._hasher.patient_hash(str(patient_id))
            with closing(sqlite3.connect(uri, uri=True, timeout=1.0)) as conn:
                query = (_PEEK_SQL, (key,)) if client is None else (_PEEK_CLIENT_SQL, (key, client))
                rows = conn.execute(*query).fetchall()
            now = datetime.now(UTC).replace(tzinfo=None)  # naive UTC, as stored
            return {
                route: {"fingerprint": fingerprint, "indicator": indicator}
                for route, fingerprint, indicator, expires_at, owner in rows
                if route in wanted
                and datetime.fromisoformat(expires_at) > now
                and (client is None or owner == client)
            }
        except sqlite3.OperationalError as exc:
            return {} if "no such table" in str(exc) else None  # no table: none can hold
        except (sqlite3.Error, OSError, ValueError, TypeError):
            return None

    def _no_database(self) -> bool:
        """True when the default SQLite file does not exist yet: nothing can be suppressed."""
        if self.settings.database_url.get_secret_value():
            return False
        return not (self.settings.data_dir / SQLITE_FILE).exists()

    def save_feedback(self, *args: Any, **kwargs: Any) -> None:
        self._open_store().save_feedback(*args, **kwargs)

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        return self._open_store().first_use(issuer, jti, expires_at)

    def health(self) -> tuple[bool, dict[str, str]]:
        store = self.wait(READY_WAIT)
        if store is None:
            return False, {"store": self._failure or "starting"}
        return store.health()

    def flush(self, timeout: float = 30.0) -> bool:
        store = self.wait(timeout)
        return store.flush(timeout) if store is not None else not self._pending

    def close(self) -> None:
        """Write what is queued (opening the store for it if need be) and close it."""
        atexit.unregister(self.close)
        if self._timer is not None:
            self._timer.cancel()
        if self._store is None and self._opener is None and not self._pending:
            return
        store = self.wait(CLOSE_WAIT)
        if store is not None:
            store.close()
            return
        if self._pending:  # the open failed or hangs (a migration lock, say): say so
            drop(_records(self._pending), "the store is not open at shutdown")
        with self._lock:
            spool, self._spool = self._spool, None
        left = spool.close() if spool is not None else 0
        if left:
            log.warning(
                "store not open at shutdown: %d bytes of issued-card records kept in the "
                "card spool for the next start",
                left,
            )


def _records(calls: list[tuple]) -> int:
    """The card records of held calls: their cards (3rd argument) and left-out cards (6th)."""
    return sum(len(call[2] or []) + len(call[5] or []) for call, _ in calls)
