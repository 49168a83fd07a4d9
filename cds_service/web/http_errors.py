"""Errors as HTTP answers: the status of each ``CdsError`` and its FHIR OperationOutcome body
(what every non-2xx answer looks like)."""

from __future__ import annotations

from werkzeug.exceptions import HTTPException

from cds_service.errors import (
    CdsError,
    Forbidden,
    HttpError,
    InvalidRequest,
    MissingData,
    NotAuthenticated,
    NotFound,
    TooManyRequests,
    Unavailable,
    UnsupportedMediaType,
)

# Most specific first: the first class an error is an instance of decides.
STATUS_OF: tuple[tuple[type[CdsError], int], ...] = (
    (UnsupportedMediaType, 415),
    (InvalidRequest, 400),
    (NotAuthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (MissingData, 412),
    (TooManyRequests, 429),
    (Unavailable, 503),
)

# HTTP status -> FHIR issue-type code (http://hl7.org/fhir/issue-type)
_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",
    413: "too-costly",
    414: "too-long",
    415: "not-supported",
    417: "not-supported",
    429: "throttled",
    431: "too-long",
    501: "not-supported",
    500: "exception",
    503: "transient",
}


def status_of(error: CdsError) -> int:
    if isinstance(error, HttpError):
        return error.status
    return next((status for kind, status in STATUS_OF if isinstance(error, kind)), 500)


def operation_outcome(status: int, message: str, diagnostics: str | None = None) -> dict:
    issue = {
        "severity": "error" if status < 500 or status == 503 else "fatal",
        "code": _ISSUE_CODES.get(status, "processing"),
        "details": {"text": message},
    }
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def from_http_exception(exc: HTTPException) -> HttpError:
    """Werkzeug's routing errors (404, 405, 413 ...) in our shape, with a short fixed text."""
    status = exc.code or 500
    texts = {
        404: "Unknown endpoint or CDS service id.",
        405: "Method not allowed on this endpoint.",
        413: "Request body is larger than the configured limit.",
    }
    headers = {}
    valid = getattr(exc, "valid_methods", None)
    if status == 405 and valid:
        headers["Allow"] = ", ".join(valid)
    return HttpError(status, texts.get(status, exc.name), headers=headers)
