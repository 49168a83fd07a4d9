"""The service's one exception hierarchy. Every error a client may see is a ``CdsError``;
its ``message`` never contains patient data or tokens. The HTTP layer
(``web/http_errors.py``) chooses each one's status; the code that raises says only what went
wrong."""

from __future__ import annotations


class CdsError(Exception):
    """The root: an error the service reports as an OperationOutcome."""

    def __init__(
        self,
        message: str,
        diagnostics: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.diagnostics = diagnostics
        self.headers = headers or {}


class RuleError(CdsError, ValueError):
    """A rule file is wrong; the message names the file and the field."""


class InvalidRequest(CdsError):
    """The request (body, hook request, feedback) breaks the CDS Hooks contract."""


class UnsupportedMediaType(InvalidRequest):
    """The body is not JSON."""


class MissingData(CdsError):
    """Data the rules need was neither prefetched nor fetchable (CDS Hooks: 412)."""


class NotAuthenticated(CdsError):
    """The client's JWT is missing or fails verification."""


class NotFound(CdsError):
    """No such endpoint, service, route or page (or it is switched off)."""


class Forbidden(CdsError):
    """An authenticated client asks for something it may not do (feedback on a card issued
    to another client)."""


class TooManyRequests(CdsError):
    """A limit on what a client may store was reached; retry later (``Retry-After``)."""


class Unavailable(CdsError):
    """A dependency the answer needs (the store) cannot be used now; retry later."""


class HttpError(CdsError):
    """An error only the HTTP layer can name (405, 413, 414 ...), with its status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message, headers=headers)
        self.status = status
