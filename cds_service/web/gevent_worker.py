"""gunicorn's gevent worker, with two costs of the stock one taken out (bench/NOTES.md).

- **Start-up**: ``gevent.monkey.patch_all()`` announces each module it patches to plugins
  found through ``importlib.metadata.entry_points(group=...)``, and every such call reads
  the entry points of every installed distribution again: 25 scans of ~100
  distributions, 0.25-0.5 s of the worker's start on this machine. Here the scan runs
  once for the whole patching (the same plugins are found and called).
- **Per response**: the stock response writes its status line and headers with one
  ``send`` and the body with another, so every answer costs two system calls and two
  loopback deliveries to the client. Here the headers wait for the first body write and
  go out with it in one ``send`` when the response has a ``Content-Length`` (all of ours
  do); chunked and file responses are written as before.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Iterator

import gevent  # type: ignore[import-untyped]
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers import ggevent


@contextlib.contextmanager
def entry_points_read_once() -> Iterator[None]:
    """Within the block, ``importlib.metadata.entry_points`` reads the installed
    distributions once and answers every later call from that one reading."""
    original = importlib.metadata.entry_points
    everything = original()

    def entry_points(**params):
        return everything.select(**params) if params else everything

    importlib.metadata.entry_points = entry_points
    try:
        yield
    finally:
        importlib.metadata.entry_points = original


class CoalescingResponse(wsgi.Response):
    """A response whose headers are sent together with the first piece of its body."""

    _pending_head: bytes | None = None
    headers_sent: bool  # set by gunicorn's Response

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        if self.chunked or self.response_length is None or self._omits_body:
            super().send_headers()
            return
        tosend = self.default_headers()
        tosend.extend([f"{k}: {v}\r\n" for k, v in self.headers])
        self._pending_head = util.to_bytestring("{}\r\n".format("".join(tosend)), "latin-1")
        self.headers_sent = True

    def _flush_head(self) -> None:
        head, self._pending_head = self._pending_head, None
        if head is not None:
            util.write(self.sock, head)

    def _emit_body(self, data: bytes) -> None:
        head, self._pending_head = self._pending_head, None
        if head is not None:
            data = head + data
        super()._emit_body(data)

    def sendfile(self, respiter) -> bool:
        self._flush_head()
        return super().sendfile(respiter)

    def close(self) -> None:
        super().close()
        self._flush_head()  # headers of an empty body (or a body cut short)


class GeventWorker(ggevent.GeventWorker):
    """``worker_class`` of cds_service.web.gunicorn_conf."""

    def patch(self) -> None:
        with entry_points_read_once():
            super().patch()

    def init_process(self) -> None:
        wsgi.Response = CoalescingResponse  # what wsgi.create builds
        super().init_process()

    def handle_request(self, listener_name, req, sock, addr) -> None:
        super().handle_request(listener_name, req, sock, addr)
        # Take turns: a keep-alive connection whose next request is already waiting would
        # otherwise be served again at once, ahead of requests that came earlier on other
        # connections (hook calls are CPU-bound and never wait): under load half the calls
        # answered in 4 ms and a quarter after 0.3-2 s. One switch costs a few microseconds.
        gevent.sleep(0)
