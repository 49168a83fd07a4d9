"""``Server-Timing`` on every response: the server's own time, free of the network."""

from __future__ import annotations

import time

STARTED = "cds.started"  # WSGI environ key: perf_counter() when the request reached the app
PHASES = "cds.phases"  # WSGI environ key: [(phase, ms)] of a hook call, for Server-Timing


class ServerTiming:
    """WSGI middleware: ``Server-Timing: app;dur=<ms>`` on every response (a hook call adds
    ``parse`` and ``evaluate``, so an integrator sees where the time went).

    The clock starts when the WSGI server hands over the request and stops when the
    response headers are sent (for our non-streamed responses, after the body is built),
    so it covers routing, parsing, the rules, rendering and serialising. Benchmarks compare
    this server time, free of client and network overhead; bench/baseline.py uses the
    same middleware so both sides are measured the same way.
    """

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        environ[STARTED] = started

        def timed_start_response(status, headers, exc_info=None):
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            parts = [f"app;dur={elapsed_ms:.3f}"]
            parts += [f"{name};dur={ms:.3f}" for name, ms in environ.get(PHASES, ())]
            headers.append(("Server-Timing", ", ".join(parts)))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, timed_start_response)
