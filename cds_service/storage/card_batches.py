"""One write of card records at a time, for the card writer (card_writer.py): the next batch
(records the spool could not keep, held in memory, first; then the spool's oldest), written
to the store, or kept for a retry, and what happened counted and said.

A write returns False (or raises) when the store is unavailable: the batch stays where it is.
``RecordsRefused`` means the database refuses the rows themselves (a value too long, a
constraint): retrying them would stall every later record, so the batch is written row by
row and the refused rows are dropped, counted and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from cds_service.storage.spool import Batch, CardSpool

log = logging.getLogger("cds_service.storage.card_writer")

BATCH_SIZE = 2000  # most issued-card rows per write transaction (a backlog: fewer commits)
LOG_INTERVAL = 10.0  # seconds between repeated warnings about the same trouble

# A write returns False (or raises) when the store is unavailable; None or True: taken.
Write = Callable[[list[dict]], "bool | None"]


class RecordsRefused(Exception):
    """Raised by a write when the database refuses the rows, not because it is away."""


class MemoryBatch:
    """Rows of calls the spool could not keep: the first ``calls`` of the memory queue."""

    def __init__(self, calls: int, rows: list[dict]):
        self.calls = calls
        self.rows = rows


class Throttled:
    """A warning said at most once per ``LOG_INTERVAL``, with the count it missed meanwhile
    (the message's first argument)."""

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


def count(name: str, records: int) -> None:
    """A card-record counter of cds_service.metrics (never fails the caller)."""
    if records <= 0:
        return
    try:
        from cds_service import metrics

        getattr(metrics, name).inc(records)
    except Exception as exc:
        log.warning("card record metric not counted: %s", type(exc).__name__)


_dropped: dict[str, Throttled] = {}  # by reason (a few fixed texts)


def drop(records: int, reason: str) -> None:
    """Records that will never be written: counted and logged, never silently."""
    count("CARD_RECORDS_DROPPED", records)
    say = _dropped.setdefault(
        reason, Throttled(logging.ERROR, "%d issued-card records dropped: " + reason)
    )
    say(records)


class Batches:
    """The writer's attempts: ``next`` batch, ``attempt`` to write it (True: dealt with)."""

    def __init__(self, write: Write, spool: CardSpool | None):
        self.write = write
        self.spool = spool
        self.memory: deque[list[dict]] = deque()  # calls the spool could not keep
        self._kept = Throttled(
            logging.WARNING,
            "%d issued-card records kept in the spool until the store takes them (%s)",
        )

    def next(self) -> Batch | MemoryBatch | None:
        if self.memory:
            calls, rows = 0, []
            for call in list(self.memory):
                calls += 1
                rows += call
                if len(rows) >= BATCH_SIZE:
                    break
            return MemoryBatch(calls, rows)
        while self.spool is not None:
            batch = self.spool.read(BATCH_SIZE)
            if batch is None:
                return None
            if batch.bad_lines:
                count("CARD_RECORDS_DROPPED", batch.bad_lines)
                log.error(
                    "%d unreadable lines skipped in card spool file %s",
                    batch.bad_lines,
                    batch.segment.path.name,
                )
            if batch.rows:
                return batch
            self.spool.written(batch)  # nothing readable in it: past it
        return None

    def attempt(self, batch: Batch | MemoryBatch) -> bool:
        refused = 0
        try:
            taken = self.write(batch.rows) is not False
        except RecordsRefused:
            taken, refused = self._write_each(batch.rows)
        except Exception as exc:
            log.error("issued-card writer error: %s", type(exc).__name__)
            taken = False
        rows = len(batch.rows) - refused
        if taken:
            if isinstance(batch, MemoryBatch):
                for _ in range(batch.calls):
                    self.memory.popleft()
            else:
                assert self.spool is not None
                self.spool.written(batch)
                from_spool = max(0, rows - batch.fresh)  # tried before, or a dead process's
                if from_spool:
                    count("CARD_RECORDS_FROM_SPOOL", from_spool)
                    log.info("%d issued-card records written from the spool", from_spool)
            count("CARD_RECORDS_WRITTEN", rows)
            return True
        if isinstance(batch, Batch):
            assert self.spool is not None
            self.spool.not_written(batch)
            count("CARD_RECORDS_SPOOLED", batch.fresh)
            self._kept(batch.fresh, f"{self.spool.waiting_bytes()} bytes waiting")
        return False

    def _write_each(self, rows: list[dict]) -> tuple[bool, int]:
        """Row by row, after the database refused the batch: (all dealt with, refused).
        A refused row is dropped; the store going away stops here (the batch is retried,
        its rows written already are then ignored: the card uuid is the key)."""
        refused = 0
        for record in rows:
            try:
                if self.write([record]) is False:
                    return False, refused
            except RecordsRefused:
                refused += 1
            except Exception as exc:
                log.error("issued-card writer error: %s", type(exc).__name__)
                return False, refused
        drop(refused, "refused by the database")
        return True, refused
