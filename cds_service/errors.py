"""Errors as FHIR OperationOutcome bodies: what every non-2xx answer looks like."""

from __future__ import annotations

from werkzeug.exceptions import HTTPException

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
    431: "too-long",
    501: "not-supported",
    500: "exception",
    503: "transient",
}


class CdsError(Exception):
    """An error a client should see. ``message`` must never contain patient data or tokens."""

    def __init__(
        self,
        status: int,
        message: str,
        diagnostics: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.diagnostics = diagnostics
        self.headers = headers or {}


def operation_outcome(status: int, message: str, diagnostics: str | None = None) -> dict:
    issue = {
        "severity": "error" if status < 500 or status == 503 else "fatal",
        "code": _ISSUE_CODES.get(status, "processing"),
        "details": {"text": message},
    }
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def from_http_exception(exc: HTTPException) -> CdsError:
    """Werkzeug's routing errors (404, 405, 413 ...) in our shape, with a short fixed text."""
    status = exc.code or 500
    texts = {
        404: "Unknown endpoint or CDS service id.",
        405: "Method not allowed on this endpoint.",
        413: "Request body is larger than the configured limit.",
    }
    headers = {}
    if status == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(exc.valid_methods)
    return CdsError(status, texts.get(status, exc.name), headers=headers)
