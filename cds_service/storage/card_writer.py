"""Issued-card rows written in the background, in batches, off the hook's request path.

``put`` never blocks and never raises for the records' sake: it appends the rows to this
process's on-disk spool (spool.py), which is the writer's queue, and wakes a daemon thread
that writes them to the store (card_batches.py). The thread waits up to ``WRITE_DELAY`` for
more calls, so the calls of half a second share one transaction, unless ``FULL_BATCH_CALLS``
already wait; ``flush`` and ``close`` cut the wait short.

Rows the store cannot take (database down, file read-only) stay in the spool, fsync-ed, and
are tried again with a growing pause (up to ``RETRY_MAX``). At shutdown the writer writes
what it can and leaves the rest to the next process; the files of a process that is gone
are taken over (``adopt``, every ``ORPHAN_CHECK``). A spool that cannot be written leaves the
rows in memory (``MEMORY_LIMIT`` calls); rows that fit nowhere are dropped and counted.
``write_now`` writes given cards' records at once, from any spool of the database on this
host: feedback needs its card recorded first. Counters: ``cds_card_records_*_total``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection

from cds_service.storage.card_batches import Batches, Throttled, Write, drop
from cds_service.storage.spool import CardSpool, SpoolFull

log = logging.getLogger(__name__)

WRITE_DELAY = 0.5  # seconds a write waits for more calls to join it
FULL_BATCH_CALLS = 500  # calls waiting that make a batch worth writing without waiting
MEMORY_LIMIT = 10_000  # calls kept in memory while the spool cannot be written
CLOSE_TIMEOUT = 30.0  # seconds close() waits for the writer
RETRY_FIRST = 0.5  # seconds before the first retry after a failed write; doubles each time
RETRY_MAX = 5.0  # ... up to this
ORPHAN_CHECK = 10.0  # seconds between looks for spool files of processes that are gone


class CardWriter:
    """Calls ``write(rows)`` from a background thread with the rows ``put`` so far."""

    def __init__(self, write: Write, spool: CardSpool | None = None):
        self._write = write
        self._spool = spool
        self._batches = Batches(lambda rows: self._write(rows), spool)  # late: tests wrap it
        self._thread: threading.Thread | None = None
        self._running = False  # the thread is in its loop (cheaper to read than is_alive)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._new_events()
        self._spool_trouble = Throttled(
            logging.WARNING,
            "%d calls' card records kept in memory: the spool cannot be written (%s)",
        )
        self.adopt()  # a previous run's records

    def adopt(self) -> None:
        """Take over the spool files no process holds now (a previous run's, a killed
        worker's, the starting store's) and write them. Never raises: the writer's next
        look (``ORPHAN_CHECK``) tries again."""
        try:
            if self._spool is None or not self._spool.adopt_orphans():
                return
            with self._progress:  # a flush from now on waits for them too
                self._put += 1
                self._calls += 1
            self._wake.set()
            self._start()
        except Exception as exc:
            log.warning("card spool files not taken over yet: %s", type(exc).__name__)

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
                drop(len(rows), "the card spool is full (CDS_CARD_SPOOL_MAX_BYTES)")
                return
            except OSError as exc:
                self._spool_trouble(1, exc.strerror or type(exc).__name__)
        if len(self._batches.memory) >= MEMORY_LIMIT:
            drop(len(rows), "neither the card spool nor memory can keep more")
            return
        self._batches.memory.append(rows)

    def _start(self) -> None:
        if self._running and self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread is not ours
                self._pid = os.getpid()
                self._batches = Batches(lambda rows: self._write(rows), self._spool)
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
            batch = self._batches.next()
            if batch is None:
                with self._progress:
                    self._written = max(self._written, ticket)
                    self._progress.notify_all()
                return True
            if not self._batches.attempt(batch):
                with self._progress:
                    self._failures += 1
                    self._progress.notify_all()
                return False
            time.sleep(0)  # a backlog: let the worker's requests run between batches

    # ------------------------------------------------------------------ callers

    def write_now(self, card_uuids: Collection[str]) -> bool:
        """Write the records of these cards now, if they still wait in this process's
        memory or in a spool file of this database on this host (any process's): feedback
        about a card needs its record in the store first. False when the store refused."""
        wanted = set(card_uuids)
        memory = list(self._batches.memory)
        rows = [row for call in memory for row in call if row["card_uuid"] in wanted]
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
            return not self._batches.memory  # nothing to wait for (the spool keeps the rest)
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
        if self._batches.memory:
            drop(sum(len(call) for call in self._batches.memory), "not written at shutdown")
            self._batches.memory.clear()
        left = self._spool.close() if self._spool is not None else 0
        if left:
            log.warning(
                "%d bytes of issued-card records kept in the spool (%s) for the next start",
                left,
                self._spool.directory if self._spool is not None else "",
            )
