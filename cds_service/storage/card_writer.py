"""Issued-card rows written in the background, in batches, off the hook's request path.

``put`` never blocks: rows go on a bounded in-memory queue and a daemon thread writes them.
The thread waits up to ``WRITE_DELAY`` for more calls, so the calls of half a second share
one transaction; when ``FULL_BATCH_CALLS`` are already queued it does not wait at all.
``flush`` and ``close`` cut the wait short. After a fork (gunicorn workers) the child starts
its own thread and queue.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

BATCH_SIZE = 2000  # most issued-card rows per write transaction (a backlog: fewer commits)
WRITE_DELAY = 0.5  # seconds a write waits for more calls to join it
FULL_BATCH_CALLS = 500  # calls queued that make a batch worth writing without waiting
QUEUE_LIMIT = 10_000  # hook calls waiting to be written; beyond this, records are dropped
CLOSE_TIMEOUT = 30.0  # seconds close() waits for the writer to drain the queue

_STOP = object()


class CardWriter:
    """Calls ``write(rows)`` from a background thread with the rows ``put`` so far."""

    def __init__(self, write: Callable[[list[dict]], None]):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._running = False  # the thread is in its loop (cheaper to read than is_alive)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._hurry = threading.Event()  # set by flush() and close(): write without waiting

    def put(self, rows: list[dict]) -> None:
        """Queue rows for writing; raises ``queue.Full`` when the queue is full."""
        self._start()
        self._queue.put_nowait(rows)

    def _start(self) -> None:
        if self._running and self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread is not ours
                self._pid = os.getpid()
                self._queue = queue.Queue(maxsize=QUEUE_LIMIT)
                self._hurry = threading.Event()
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

    def _loop(self) -> None:
        try:
            self._drain()
        finally:
            self._running = False

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get()
                if isinstance(item, list) and self._queue.qsize() < FULL_BATCH_CALLS:
                    # Let the calls of the next half second join this write: one
                    # transaction (one commit, one WAL sync) for all of them, where taking
                    # whatever was queued meant a transaction per call under load (11% of
                    # a worker at 20 resources, the writer being a greenlet of the same
                    # worker under gevent). flush() and close() cut the wait short; with a
                    # full batch already queued there is no wait, so the queue cannot grow.
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
                    self._write(rows)
                for marker in markers:
                    marker.set()
                if stop:
                    return
            except Exception as exc:  # the writer must survive anything
                log.error("issued-card writer error: %s", type(exc).__name__)

    def flush(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait until every row queued so far has been written (or given up on)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return self._queue.empty()
        marker = threading.Event()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        self._hurry.set()
        return marker.wait(timeout)

    def close(self) -> None:
        """Write what is queued and stop the thread (in the process that started it)."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            try:
                self._queue.put(_STOP, timeout=CLOSE_TIMEOUT)
                self._hurry.set()
                thread.join(CLOSE_TIMEOUT)
            except queue.Full:
                log.warning("issued-card writer did not drain its queue before shutdown")
        left = self._queue.qsize()
        if left:
            log.warning("%d queued issued-card batches not written at shutdown", left)
