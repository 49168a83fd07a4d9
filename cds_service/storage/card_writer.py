"""Issued-card rows written in the background, in batches, off the hook's request path.

``put`` never blocks and never raises for the records' sake: it appends the rows to this
process's on-disk spool (spool.py), which is the writer's queue, and wakes a daemon thread
that writes them to the store. The thread waits up to ``WRITE_DELAY`` for more calls, so the
calls of half a second share one transaction; when ``FULL_BATCH_CALLS`` are already waiting it
does not wait at all. ``flush`` and ``close`` cut the wait short.

When the store cannot take a batch (the database is down, a file is read-only) the records
stay in the spool, are fsync-ed, and are tried again with a growing pause (at most
``RETRY_MAX``) until the store is back; nothing is acknowledged as written before it is.
At shutdown the writer writes what it can and leaves the rest in the spool for the next
process (the files of a process that is gone are taken over by another, ``ORPHAN_CHECK``).
A spool that cannot be written (no disk, no directory) leaves the rows in memory (at most
``MEMORY_LIMIT`` calls); rows that fit nowhere are dropped, counted and logged, never silently,
and so are rows the database itself refuses (``RecordsRefused``: written one by one, so the
others of their batch are kept). ``write_now`` writes the records of given cards at once,
from any spool of the database on this host: feedback needs its card recorded first.

Counted: ``cds_card_records_written_total``, ``cds_card_records_spooled_total`` (the first
write failed: kept for a retry), ``cds_card_records_recorded_from_spool_total`` (written by a
retry, or left by a process that is gone) and ``cds_card_records_dropped_total``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection

from cds_service.storage.spool import Batch, CardSpool, SpoolFull

log = logging.getLogger(__name__)

BATCH_SIZE = 2000  # most issued-card rows per write transaction (a backlog: fewer commits)
WRITE_DELAY = 0.5  # seconds a write waits for more calls to join it
FULL_BATCH_CALLS = 500  # calls waiting that make a batch worth writing without waiting
MEMORY_LIMIT = 10_000  # calls kept in memory while the spool cannot be written
CLOSE_TIMEOUT = 30.0  # seconds close() waits for the writer
RETRY_FIRST = 0.5  # seconds before the first retry after a failed write; doubles each time
RETRY_MAX = 5.0  # ... up to this
ORPHAN_CHECK = 10.0  # seconds between looks for spool files of processes that are gone
LOG_INTERVAL = 10.0  # seconds between repeated warnings about the same trouble

# A write returns False (or raises) when the store is unavailable; None or True: taken.
Write = Callable[[list[dict]], "bool | None"]


class RecordsRefused(Exception):
    """Raised by a write when the database refuses the rows themselves (a value too long,
    a constraint), not because it is away: retrying them would stall every later record,
    so the writer writes the batch row by row and drops (counts, logs) the refused ones."""


class _MemoryBatch:
    """Rows of calls the spool could not keep: the first ``calls`` of the memory queue."""

    def __init__(self, calls: int, rows: list[dict]):
        self.calls = calls
        self.rows = rows


class _Throttled:
    """A warning said at most once per ``LOG_INTERVAL``, with what it missed meanwhile."""

    def __init__(self, level: int, message: str):
        self.level, self.message = level, message
        self._last = -LOG_INTERVAL
        self._count = 0
        self._lock = threading.Lock()

    def __call__(self, count: int, *args: object) -> None:
        with self._lock:
            self._count += count
            now = time.monotonic()
            if now - self._last < LOG_INTERVAL:
                return
            total, self._count, self._last = self._count, 0, now
        log.log(self.level, self.message, total, *args)


class CardWriter:
    """Calls ``write(rows)`` from a background thread with the rows ``put`` so far."""

    def __init__(self, write: Write, spool: CardSpool | None = None):
        self._write = write
        self._spool = spool
        self._memory: deque[list[dict]] = deque()  # calls the spool could not keep
        self._thread: threading.Thread | None = None
        self._running = False  # the thread is in its loop (cheaper to read than is_alive)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._new_events()
        self._dropped = _Throttled(logging.ERROR, "%d issued-card records dropped: %s")
        self._spool_trouble = _Throttled(
            logging.WARNING,
            "%d calls' card records kept in memory: the spool cannot be written (%s)",
        )
        self._kept = _Throttled(
            logging.WARNING,
            "%d issued-card records kept in the spool until the store takes them (%s)",
        )
        self.adopt()  # a previous run's records

    def adopt(self) -> None:
        """Take over the spool files no process holds now (a previous run's, a killed
        worker's, the starting store's) and write them."""
        if self._spool is not None and self._spool.adopt_orphans():
            with self._progress:  # a flush from now on waits for them too
                self._put += 1
                self._calls += 1
            self._wake.set()
            self._start()

    def _new_events(self) -> None:
        self._wake = threading.Event()  # set by put(): rows are waiting
        self._hurry = threading.Event()  # set by flush() and close(): write without waiting
        self._progress = threading.Condition()  # guards and signals the counters below
        self._calls = 0  # calls put since the writer last took them
        self._put = 0  # calls put, ever: flush's ticket
        self._written = 0  # every call up to this ticket is in the store (or dropped)
        self._failures = 0  # write attempts the store refused, ever
        self._stopping = False

    # ------------------------------------------------------------------ the hook's side

    def put(self, rows: list[dict]) -> None:
        """Keep the rows (spool, else memory, else count them dropped) and wake the writer;
        raises only when the writer thread cannot be started (the rows are kept)."""
        if self._pid != os.getpid():
            self._start()  # forked: a queue and thread of our own first
        self._keep(rows)
        with self._progress:
            self._put += 1
            self._calls += 1
        self._wake.set()
        self._start()

    def _keep(self, rows: list[dict]) -> None:
        if self._spool is not None:
            try:
                self._spool.append(rows)
                return
            except SpoolFull:
                self._drop(len(rows), "the card spool is full (CDS_CARD_SPOOL_MAX_BYTES)")
                return
            except OSError as exc:
                self._spool_trouble(1, exc.strerror or type(exc).__name__)
        if len(self._memory) >= MEMORY_LIMIT:
            self._drop(len(rows), "neither the card spool nor memory can keep more")
            return
        self._memory.append(rows)

    def _drop(self, count: int, reason: str) -> None:
        _count("CARD_RECORDS_DROPPED", count)
        self._dropped(count, reason)

    def _start(self) -> None:
        if self._running and self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread is not ours
                self._pid = os.getpid()
                self._memory = deque()
                self._new_events()
                self._thread = None
            if self._thread is None or not self._thread.is_alive():
                self._running = True  # before the start: a thread that ends at once clears it
                self._thread = threading.Thread(
                    target=self._loop, daemon=True, name="cds-card-writer"
                )
                try:
                    self._thread.start()
                except BaseException:  # e.g. "can't start new thread": the next put tries again
                    self._running = False
                    self._thread = None
                    raise

    # ------------------------------------------------------------------ the writer thread

    def _loop(self) -> None:
        try:
            self._drain()
        finally:
            self._running = False

    def _drain(self) -> None:
        retry = 0.0  # seconds to the next attempt after a refused write (0: none refused)
        next_orphan_check = 0.0
        while True:
            try:
                if retry:
                    self._hurry.wait(retry)
                    self._hurry.clear()
                else:
                    self._wake.wait(ORPHAN_CHECK)
                    self._wake.clear()
                    if not self._stopping and self._calls < FULL_BATCH_CALLS:
                        # Let the calls of the next half second join this write: one
                        # transaction (one commit, one WAL sync) for all of them, where a
                        # transaction per call cost 11% of a worker under load (the writer
                        # being a greenlet of the same worker under gevent).
                        self._hurry.wait(WRITE_DELAY)
                        self._hurry.clear()
                self._calls = 0
                if self._spool is not None and time.monotonic() >= next_orphan_check:
                    next_orphan_check = time.monotonic() + ORPHAN_CHECK
                    self._spool.adopt_orphans()
                written = self._write_waiting()
                retry = 0.0 if written else min(max(retry * 2, RETRY_FIRST), RETRY_MAX)
            except Exception as exc:  # the writer must survive anything
                log.error("issued-card writer error: %s", type(exc).__name__)
                retry = RETRY_MAX
            if self._stopping:
                return

    def _write_waiting(self) -> bool:
        """Write batches until nothing waits (True) or the store refuses one (False)."""
        while True:
            with self._progress:
                ticket = self._put  # every call up to here has kept its rows
            batch = self._next_batch()
            if batch is None:
                with self._progress:
                    self._written = max(self._written, ticket)
                    self._progress.notify_all()
                return True
            if not self._attempt(batch):
                return False
            time.sleep(0)  # a backlog: let the worker's requests run between batches

    def _next_batch(self) -> Batch | _MemoryBatch | None:
        if self._memory:
            calls, rows = 0, []
            for call in list(self._memory):
                calls += 1
                rows += call
                if len(rows) >= BATCH_SIZE:
                    break
            return _MemoryBatch(calls, rows)
        while self._spool is not None:
            batch = self._spool.read(BATCH_SIZE)
            if batch is None:
                return None
            if batch.bad_lines:
                _count("CARD_RECORDS_DROPPED", batch.bad_lines)
                log.error(
                    "%d unreadable lines skipped in card spool file %s",
                    batch.bad_lines,
                    batch.segment.path.name,
                )
            if batch.rows:
                return batch
            self._spool.written(batch)  # nothing readable in it: past it
        return None

    def _attempt(self, batch: Batch | _MemoryBatch) -> bool:
        refused = 0
        try:
            taken = self._write(batch.rows) is not False
        except RecordsRefused:
            taken, refused = self._write_each(batch.rows)
        except Exception as exc:
            log.error("issued-card writer error: %s", type(exc).__name__)
            taken = False
        rows = len(batch.rows) - refused
        if taken:
            if isinstance(batch, _MemoryBatch):
                for _ in range(batch.calls):
                    self._memory.popleft()
            else:
                assert self._spool is not None
                self._spool.written(batch)
                from_spool = max(0, rows - batch.fresh)  # tried before, or a dead process's
                if from_spool:
                    _count("CARD_RECORDS_FROM_SPOOL", from_spool)
                    log.info("%d issued-card records written from the spool", from_spool)
            _count("CARD_RECORDS_WRITTEN", rows)
            return True
        if isinstance(batch, Batch):
            assert self._spool is not None
            self._spool.not_written(batch)
            _count("CARD_RECORDS_SPOOLED", batch.fresh)
            self._kept(batch.fresh, f"{self._spool.waiting_bytes()} bytes waiting")
        with self._progress:
            self._failures += 1
            self._progress.notify_all()
        return False

    def _write_each(self, rows: list[dict]) -> tuple[bool, int]:
        """Row by row, after the database refused the batch: (all dealt with, refused).
        A refused row is dropped; the store going away stops here (the batch is retried,
        its rows written already are then ignored: the card uuid is the key)."""
        refused = 0
        for record in rows:
            try:
                if self._write([record]) is False:
                    return False, refused
            except RecordsRefused:
                refused += 1
            except Exception as exc:
                log.error("issued-card writer error: %s", type(exc).__name__)
                return False, refused
        self._drop(refused, "refused by the database")
        return True, refused

    # ------------------------------------------------------------------ callers

    def write_now(self, card_uuids: Collection[str]) -> bool:
        """Write the records of these cards now, if they still wait in this process's
        memory or in a spool file of this database on this host (any process's): feedback
        about a card needs its record in the store first. False when the store refused."""
        wanted = set(card_uuids)
        rows = [row for call in list(self._memory) for row in call if row["card_uuid"] in wanted]
        if self._spool is not None:
            rows += self._spool.find(wanted - {row["card_uuid"] for row in rows})
        if not rows:
            return True
        try:
            return self._write(rows) is not False
        except Exception as exc:
            log.error("issued-card records for feedback not written: %s", type(exc).__name__)
            return False

    def flush(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait until every row put so far has been written, or the store refused a write
        meanwhile (the rows then wait in the spool for a retry); False if time ran out."""
        thread = self._thread
        if thread is None or not thread.is_alive() or self._pid != os.getpid():
            return not self._memory  # nothing to wait for (the spool keeps the rest)
        with self._progress:
            target, failures = self._put, self._failures
        self._hurry.set()
        self._wake.set()
        with self._progress:
            return self._progress.wait_for(
                lambda: self._written >= target or self._failures > failures, timeout
            )

    def close(self) -> None:
        """Write what waits if the store takes it, keep the rest in the spool for the next
        process, and stop the thread (in the process that started it)."""
        if self._pid != os.getpid():
            return
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._stopping = True
            self._hurry.set()
            self._wake.set()
            thread.join(CLOSE_TIMEOUT)
            if thread.is_alive():
                log.warning("issued-card writer still busy at shutdown: its records stay spooled")
                return
        if self._memory:
            self._drop(sum(len(call) for call in self._memory), "not written at shutdown")
            self._memory.clear()
        left = self._spool.close() if self._spool is not None else 0
        if left:
            log.warning(
                "%d bytes of issued-card records kept in the spool (%s) for the next start",
                left,
                self._spool.directory if self._spool is not None else "",
            )


def _count(name: str, count: int) -> None:
    """A storage counter of cds_service.metrics (never fails the writer)."""
    if count <= 0:
        return
    try:
        from cds_service import metrics

        getattr(metrics, name).inc(count)
    except Exception as exc:
        log.warning("card record metric not counted: %s", type(exc).__name__)
