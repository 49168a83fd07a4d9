"""Requests in flight in this process, so the card writer can do its batches in between.

Under gunicorn's gevent worker the card writer (card_writer.py) is a greenlet of the worker
that serves the requests: whenever a request waits on its socket (its body still arriving,
its answer being sent), the hub may run the writer, and the request then waits for the
whole batch (reading the spool back, SQLite inserts, a commit) before it goes on, inside
its server time. The worker (web/gevent_worker.py) counts each request from the moment it
is handed over until its answer is sent; the writer waits for none to be in flight before a
batch, up to ``CardWriter``'s ``QUIET_WAIT_MAX``, so a steady load still gets its records
written (in larger batches). Outside the gevent worker nothing is counted: the writer never
waits.

Only greenlets of one thread call ``enter``/``leave`` (the worker's hub). The event is made
at first use in each process: one made before gevent patched ``threading`` (the master
imports this module) would block the whole worker when waited on.
"""

from __future__ import annotations

import os
import threading


class InFlight:
    def __init__(self) -> None:
        self._count = 0
        self._idle: threading.Event | None = None
        self._pid = os.getpid()

    def _event(self) -> threading.Event:
        if self._idle is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._count = 0
            self._idle = threading.Event()
            self._idle.set()
        return self._idle

    def enter(self) -> None:
        idle = self._event()
        self._count += 1
        idle.clear()

    def leave(self) -> None:
        idle = self._event()
        self._count = max(0, self._count - 1)
        if not self._count:
            idle.set()

    @property
    def count(self) -> int:
        return self._count if self._pid == os.getpid() else 0

    def wait_idle(self, timeout: float) -> bool:
        """Until no request is in flight (True), or ``timeout`` seconds (False)."""
        if not self.count:
            return True
        return self._event().wait(timeout)


REQUESTS = InFlight()  # this process's requests; counted by web/gevent_worker.py
