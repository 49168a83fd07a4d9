"""Errors gunicorn answers itself, before the app sees a request, as OperationOutcome JSON.

gunicorn renders a request it cannot parse (bad request line, 414 URI too long, 431 header
fields too large, bad chunked framing ...) with ``Worker.handle_error``, which writes a
small HTML page. It offers no setting for that body, so ``install`` (called from the
``post_worker_init`` server hook in ``gunicorn_conf``) gives the worker object its own
``handle_error``: the request errors below get our OperationOutcome and the headers every
answer carries; anything else (TLS errors, configuration problems, application errors
gunicorn caught) still goes to gunicorn's own handler. Only gunicorn's public exception
classes are used, and every worker class calls ``self.handle_error``.

Nothing from the request (its line, headers or the exception text, which quote them) is
logged or echoed: a URL may hold a patient id.
"""

from __future__ import annotations

import logging
import types

import orjson

from cds_service.web.http_errors import operation_outcome
from cds_service.web.http_guard import ALWAYS_HEADERS

log = logging.getLogger(__name__)

_BAD_REQUEST = (400, "Bad Request", "Malformed HTTP request.")


def _classify(exc: BaseException) -> tuple[int, str, str] | None:
    """(status, reason, message) for a client's request error; None for anything else."""
    from gunicorn.http import errors as e

    if isinstance(exc, (e.InvalidResponseHeader, e.InvalidResponseHeaderName)):
        return None  # the app's fault: gunicorn answers 500
    if isinstance(exc, e.LimitRequestLine):
        return 414, "URI Too Long", "Request line (URI) is too long."
    if isinstance(exc, e.LimitRequestHeaders):
        return 431, "Request Header Fields Too Large", "Request header fields are too large."
    if isinstance(exc, e.ExpectationFailed):
        return 417, "Expectation Failed", "Expect header not supported."
    if isinstance(exc, e.UnsupportedTransferCoding):
        return 501, "Not Implemented", "Transfer-Encoding not supported."
    if isinstance(exc, e.ForbiddenProxyRequest):
        return 403, "Forbidden", "Request forbidden."
    if isinstance(
        exc,
        (
            e.InvalidRequestLine,
            e.InvalidRequestMethod,
            e.InvalidHTTPVersion,
            e.InvalidHeader,
            e.InvalidHeaderName,
            e.ObsoleteFolding,
            e.InvalidProxyLine,
            e.InvalidSchemeHeaders,
            e.InvalidChunkSize,
            e.ChunkMissingTerminator,
            e.InvalidChunkExtension,
            e.InvalidH2CPreface,
        ),
    ):
        return _BAD_REQUEST
    return None


def error_bytes(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 response with an OperationOutcome body; the connection closes."""
    body = orjson.dumps(operation_outcome(status, message))
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    head += [f"{name}: {value}" for name, value in ALWAYS_HEADERS]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


LINGER_BYTES = 256 * 1024  # most unread request bytes drained before closing
LINGER_SECONDS = 1.0


def _linger(client) -> None:
    """Close gently: half-close, then drain what the client is still sending for a moment.

    Closing a socket with unread request bytes (the rest of a 9 kB request line) makes the
    kernel send a reset, and the client may then lose the answer already sent. Under the
    gevent worker the drain is a cooperative wait, it holds no thread.
    """
    import socket
    import time

    client.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + LINGER_SECONDS
    drained = 0
    try:
        while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            client.settimeout(left)
            chunk = client.recv(65536)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:
        pass


def install(worker) -> None:
    """Answer request errors of this gunicorn worker as OperationOutcome (see above)."""
    from gunicorn import util

    original = worker.handle_error

    def handle_error(self, req, client, addr, exc):
        shape = _classify(exc)
        if shape is None:
            return original(req, client, addr, exc)
        status, reason, message = shape
        log.warning("HTTP request refused before the app: %d (%s)", status, type(exc).__name__)
        try:
            util.write_nonblock(client, error_bytes(status, reason, message))
            _linger(client)
        except Exception:
            log.debug("could not send the %d answer", status)
        return None

    worker.handle_error = types.MethodType(handle_error, worker)
