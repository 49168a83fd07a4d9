"""WSGI middleware in front of the Flask app: what every request and response goes through.

- Response headers every answer carries, errors and CORS preflights included:
  ``Cache-Control: no-store`` (hook answers carry patient data; nothing here is cacheable)
  and ``X-Content-Type-Options: nosniff``.
- Paths: repeated slashes are merged and one trailing slash is dropped before routing, so
  ``/cds-services/`` and ``//cds-services`` are served like ``/cds-services`` (preflight
  included). Werkzeug would otherwise answer a redirect built from the ``Host`` header.
  The path as called is kept (``ORIGINAL_PATH``): the JWT ``aud`` names that URL.
- The request body is read here, completely, before the app runs:
  * over ``CDS_MAX_BODY_BYTES`` (by ``Content-Length`` or while reading a chunked body) it
    answers 413, after reading and discarding the rest of the body (up to
    ``DISCARD_LIMIT`` bytes and ``DISCARD_SECONDS``), so a client that sends its whole
    body before reading (Python's http.client) receives the 413 rather than a reset;
  * a body that cannot be read (malformed chunked encoding, a chunk shorter than its
    size line, the client gone mid-body) answers 400, never 500;
  * the app answers those errors (``BODY_ERROR``), so they get CORS, metrics and the
    access line like any other;
  * otherwise the app gets the body as an in-memory stream with its exact length, and the
    bytes themselves (``BODY``): reading them back through werkzeug's stream would copy
    the body four times in 64 kB pieces (~25-90 us for a 160 kB hook request).
"""

from __future__ import annotations

import io
import logging
import re
import time

log = logging.getLogger(__name__)

ORIGINAL_PATH = "cds.original_path"  # WSGI environ key: PATH_INFO as the client sent it
BODY_ERROR = "cds.body_error"  # WSGI environ key: (status, message) for the app to answer
BODY = "cds.body"  # WSGI environ key: the whole request body as read here (bytes)
ALWAYS_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))
DISCARD_LIMIT = 64 * 1024 * 1024  # most bytes of an over-limit body read and thrown away
DISCARD_SECONDS = 10.0  # longest time spent doing so
READ_CHUNK = 256 * 1024
_SLASHES = re.compile(r"//+")


class BodyUnreadable(Exception):
    """The request body could not be read as sent (framing error or client gone)."""


def normalize_path(path: str) -> str:
    """``//a//b/`` -> ``/a/b``; the root stays ``/``."""
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path


def _discard(stream, already: int) -> bool:
    """Read and drop the rest of a body; True when it ended within the bounds."""
    deadline = time.monotonic() + DISCARD_SECONDS
    total = already
    try:
        while total < DISCARD_LIMIT and time.monotonic() < deadline:
            chunk = stream.read(min(READ_CHUNK, DISCARD_LIMIT - total))
            if not chunk:
                return True
            total += len(chunk)
    except Exception:  # a framing error: the server closes the connection anyway
        return False
    return False


def _read_exactly(stream, length: int) -> bytes:
    parts, left = [], length
    try:
        while left > 0:
            chunk = stream.read(min(left, READ_CHUNK * 4))
            if not chunk:
                break
            parts.append(chunk)
            left -= len(chunk)
    except Exception as exc:
        raise BodyUnreadable(type(exc).__name__) from None
    if left:
        raise BodyUnreadable("body shorter than Content-Length")
    return b"".join(parts)


def _read_to_end(stream, limit: int) -> bytes | None:
    """A body without a length (chunked): its bytes, or None when it is over ``limit``."""
    parts: list[bytes] = []
    total = 0
    try:
        while True:
            chunk = stream.read(min(READ_CHUNK, limit + 1 - total))
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                return None
    except Exception as exc:
        raise BodyUnreadable(type(exc).__name__) from None


class HttpGuard:
    """The outermost WSGI layer (see the module docstring)."""

    def __init__(self, wsgi_app, max_body_bytes: int):
        self.wsgi_app = wsgi_app
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ, start_response):
        def with_headers(status, headers, exc_info=None):
            present = {name.lower() for name, _ in headers}
            headers.extend(h for h in ALWAYS_HEADERS if h[0].lower() not in present)
            return start_response(status, headers, exc_info)

        path = environ.get("PATH_INFO") or "/"
        environ[ORIGINAL_PATH] = path
        environ["PATH_INFO"] = normalize_path(path)

        problem = self._buffer_body(environ)
        if problem is not None:  # the app answers it (OperationOutcome, CORS, metrics)
            environ[BODY_ERROR] = problem
            environ["CONTENT_LENGTH"] = "0"
            environ["wsgi.input"] = io.BytesIO(b"")
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.wsgi_app(environ, with_headers)

    def _buffer_body(self, environ) -> tuple[int, str] | None:
        stream = environ.get("wsgi.input")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        raw_length = environ.get("CONTENT_LENGTH") or ""
        if stream is None or (not chunked and raw_length in ("", "0")):
            return None
        too_large = (413, "Request body is larger than the configured limit.")
        try:
            if chunked:
                data = _read_to_end(stream, self.max_body_bytes)
                if data is None:
                    _discard(stream, self.max_body_bytes + 1)
                    return too_large
                environ.pop("HTTP_TRANSFER_ENCODING", None)
            else:
                try:
                    length = int(raw_length)
                except ValueError:
                    return 400, "Content-Length is not a number."
                if length < 0:
                    return 400, "Content-Length is not a number."
                if length > self.max_body_bytes:
                    _discard(stream, 0)
                    return too_large
                data = _read_exactly(stream, length)
        except BodyUnreadable as exc:
            log.info("request body not readable: %s", exc)
            return 400, "Request body could not be read (malformed or incomplete)."
        environ["CONTENT_LENGTH"] = str(len(data))
        environ[BODY] = data
        environ["wsgi.input"] = io.BytesIO(data)
        environ["wsgi.input_terminated"] = True
        return None
