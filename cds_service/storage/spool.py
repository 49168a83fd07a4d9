"""Card records kept on disk until the store has them: an append-only spool in CDS_DATA_DIR.

Every card record is appended here (one JSON line per hook call) before the answer is sent
and before any database write is tried: the file, not memory, is the card writer's queue. So a
database outage, a shutdown while the database is down, or a worker killed with -9 loses
nothing that reached the spool: the records are written when the store is back, by this
process or, for a process that is gone, by the first process of the same database that
finds its files. A file is ``flock``-ed by its owner for as long as the owner runs, so an
unlocked file is an orphan. Writing is idempotent (the card uuid is the key), so a record
written twice (a crash between the commit and the file's removal) is stored once.

A file (``segment``, spool_files.py) is removed once all its records are in the store; a new
one is started past ``SEGMENT_BYTES``. A process holds at most ``max_bytes``
(CDS_CARD_SPOOL_MAX_BYTES); past that ``append`` refuses (the caller counts the drop). Only
whole lines count: a short write is cut back, a dead process's torn last line skipped.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from cds_service.storage.spool_files import (
    SUFFIX,
    decode,
    encode,
    find_records,
    lock_orphan,
    unlink,
)

log = logging.getLogger(__name__)

SEGMENT_BYTES = 4 * 1024 * 1024  # a segment is closed for appends past this size
READ_BYTES = 4 * 1024 * 1024  # most bytes read for one batch


class SpoolFull(Exception):
    """The spool holds ``max_bytes`` already: the records are not kept."""


@dataclass(eq=False)
class Segment:
    """One spool file this process holds (its lock with it)."""

    path: Path
    fd: int
    size: int  # bytes of whole lines in the file
    done: int = 0  # bytes whose records are in the store
    failed: int = 0  # bytes whose records a failed write has already counted as spooled
    synced: int = 0  # bytes known to be on disk (fsync)
    adopted: bool = False  # left by a process that is gone

    @property
    def waiting(self) -> int:
        return self.size - self.done


@dataclass
class Batch:
    """Records read from one segment, from ``start`` to ``end`` (whole lines)."""

    segment: Segment
    start: int
    end: int
    rows: list[dict] = field(default_factory=list)
    fresh: int = 0  # rows no failed write has counted as spooled yet
    bad_lines: int = 0


class CardSpool:
    """The segments of one process; ``append`` from any thread, the rest from the writer."""

    def __init__(self, directory: Path, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._segments: list[Segment] = []  # oldest first; the last may be the active one
        self._active: Segment | None = None  # where appends go
        self._bytes = 0  # size of the held segments
        self._sequence = 0
        self._pid = os.getpid()
        self._made_root = False  # the data directory is made once, as at start-up

    # ------------------------------------------------------------------ appending

    def append(self, rows: list[dict]) -> None:
        """Keep the rows on disk; ``SpoolFull`` past the bound, OSError when the file
        cannot be written (both: nothing kept)."""
        line = encode(rows)
        with self._lock:
            self._after_fork()
            if self._bytes + len(line) > self.max_bytes:
                raise SpoolFull
            segment = self._active or self._new_segment()
            try:
                written = os.write(segment.fd, line)
            except OSError:
                self._cut_back(segment)
                raise
            if written != len(line):  # a full disk: never leave a torn line behind
                self._cut_back(segment)
                raise OSError(errno.ENOSPC, "short write to the card spool")
            segment.size += written
            self._bytes += written
            if segment.size >= SEGMENT_BYTES:
                self._active = None

    def _cut_back(self, segment: Segment) -> None:
        try:
            os.ftruncate(segment.fd, segment.size)
        except OSError:
            self._active = None  # the file may now end in a torn line: append elsewhere

    def _new_segment(self) -> Segment:
        """A new file, locked before it gets its final name (so no other process can take
        it for an orphan)."""
        if not self._made_root:
            self.directory.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._made_root = True
        # Below the data directory only: one removed while running is recreated by the
        # store (with its salt), not here.
        self.directory.parent.mkdir(mode=0o700, exist_ok=True)
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self._sequence += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._sequence}"
        temporary = self.directory / f".{name}.tmp"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = self.directory / f"{name}{SUFFIX}"
            os.rename(temporary, path)
        except OSError:
            os.close(fd)
            unlink(temporary)
            raise
        segment = Segment(path, fd, 0)
        self._segments.append(segment)
        self._active = segment
        return segment

    # ------------------------------------------------------------------ the writer's side

    def waiting(self) -> bool:
        """Whether any record held here is not in the store yet."""
        with self._lock:
            self._after_fork()
            return any(s.waiting for s in self._segments)

    def waiting_bytes(self) -> int:
        with self._lock:
            return sum(s.waiting for s in self._segments)

    def read(self, max_rows: int) -> Batch | None:
        """The next records not in the store yet (oldest segment first), or None."""
        with self._lock:
            self._after_fork()
            segment = next((s for s in self._segments if s.waiting), None)
            if segment is None:
                return None
            start, size = segment.done, segment.size
            torn_tail_possible = segment.adopted
        data = os.pread(segment.fd, min(size - start, READ_BYTES), start)
        batch = Batch(segment, start, start)
        offset = start
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                if torn_tail_possible and offset + len(line) == size:  # died mid-write
                    batch.bad_lines += 1
                    batch.end = size
                break  # the rest of a line cut by READ_BYTES: the next batch has it
            try:
                rows = decode(line)
            except ValueError:
                batch.bad_lines += 1
                rows = []
            batch.rows += rows
            if offset >= segment.failed:
                batch.fresh += len(rows)
            offset += len(line)
            batch.end = offset
            if len(batch.rows) >= max_rows:
                break
        if batch.end == start and size > start and not batch.bad_lines:
            # One line longer than READ_BYTES: never written by ``append`` (a call's
            # records are a few kB); skip the file's rest rather than stall on it.
            batch.bad_lines += 1
            batch.end = size
        return batch

    def written(self, batch: Batch) -> None:
        """The batch's records are in the store: a segment whose records all are is removed."""
        with self._lock:
            segment = batch.segment
            segment.done = max(segment.done, batch.end)
            if segment.waiting == 0 and segment in self._segments:
                self._remove(segment)

    def not_written(self, batch: Batch) -> None:
        """The store refused the batch: its records stay, and are made durable now (the
        appends were not fsync-ed: a process kill cannot lose them, a power cut could)."""
        with self._lock:
            batch.segment.failed = max(batch.segment.failed, batch.end)
            segments = [s for s in self._segments if s.synced < s.size]
        for segment in segments:
            size = segment.size
            try:
                os.fsync(segment.fd)
                segment.synced = size
            except OSError as exc:
                log.warning("card spool file could not be synced: %s", exc.strerror)

    def _remove(self, segment: Segment) -> None:
        """Delete the file, then let its lock go (in that order: no other process can take
        a file whose records are all written for an orphan)."""
        unlink(segment.path)
        try:
            os.close(segment.fd)
        except OSError:
            pass
        self._segments.remove(segment)
        self._bytes -= segment.size
        if segment is self._active:
            self._active = None

    # ------------------------------------------------------------------ other processes

    def adopt_orphans(self) -> int:
        """Take over the files of processes that are gone (their lock went with them):
        their records are written by this process from now on. The number of files."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return 0
        with self._lock:
            self._after_fork()
            held = {s.path.name for s in self._segments}
        adopted = []
        for name in names:
            if name in held:
                continue
            path = self.directory / name
            if name.endswith(".tmp"):  # a file whose owner died before naming it (empty)
                fd = lock_orphan(path)
                if fd is not None:
                    unlink(path)
                    os.close(fd)
                continue
            if not name.endswith(SUFFIX):
                continue
            fd = lock_orphan(path)
            if fd is None:
                continue
            size = os.fstat(fd).st_size
            # Another process's records were put before: counted as from the spool once
            # written. This process's own (the starting store's, before the open) were not.
            ours = name.split("-")[1:2] == [str(os.getpid())]
            failed = 0 if ours else size
            adopted.append(Segment(path, fd, size, failed=failed, synced=size, adopted=True))
        if adopted:
            with self._lock:
                at = len(self._segments) - (1 if self._active is not None else 0)
                self._segments[at:at] = adopted
                self._bytes += sum(s.size for s in adopted)
        return len(adopted)

    def find(self, card_uuids: Collection[str]) -> list[dict]:
        """The records of these cards still in a spool file of this database (any process
        on this host): ``spool_files.find_records``."""
        return find_records(self.directory, card_uuids)

    # ------------------------------------------------------------------ ending

    def close(self) -> int:
        """Make what is held durable and let the files go (another process, or the next
        start, writes them). The bytes of records left."""
        with self._lock:
            segments, self._segments, self._active = self._segments, [], None
            self._bytes = 0
            own = self._pid == os.getpid()
        left = 0
        for segment in segments:
            if own and segment.waiting:
                left += segment.waiting
                try:
                    os.fsync(segment.fd)
                except OSError as exc:
                    log.warning("card spool file could not be synced: %s", exc.strerror)
            try:
                os.close(segment.fd)
            except OSError:
                pass
        if own and not left:
            for directory in (self.directory, self.directory.parent):
                try:
                    directory.rmdir()  # only when empty: no other process's files
                except OSError:
                    break
        return left

    def _after_fork(self) -> None:
        """In a forked child the parent's files (and locks) stay the parent's."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            for segment in self._segments:
                try:
                    os.close(segment.fd)  # the parent still holds its own descriptor
                except OSError:
                    pass
            self._segments, self._active, self._bytes = [], None, 0
