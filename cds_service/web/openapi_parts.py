"""Building blocks of the OpenAPI document (``openapi``): the headers every answer carries,
the error answers, and the paths that are not CDS Hooks (explanation pages, operations)."""

from __future__ import annotations

import copy

ALWAYS_HEADERS = {
    "Cache-Control": {
        "description": "Nothing is cacheable (answers carry patient data).",
        "required": True,
        "schema": {"const": "no-store"},
    },
    "X-Content-Type-Options": {
        "description": "No content sniffing.",
        "required": True,
        "schema": {"const": "nosniff"},
    },
}

ERROR_TEXTS = {
    400: "Malformed JSON, a schema violation (names the field, never the value) or an "
    "unreadable body",
    401: "Authentication failed (CDS_AUTH_MODE=jwt)",
    403: "Feedback on a card issued to another client",
    429: "Too much feedback: a cap on feedback for unknown cards or per card was reached",
    404: "Unknown endpoint (or metrics disabled, or an unknown referral route)",
    412: "Required data is missing and could not be fetched from fhirServer",
    413: "Request body larger than CDS_MAX_BODY_BYTES",
    415: "Content-Type is not JSON",
    503: "The store is unavailable; retry later",
}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(name: str, types=("application/json",)) -> dict:
    return {media: {"schema": ref(name)} for media in types}


def answer(description: str, schema: str | None = None, **extra) -> dict:
    built = {"description": description, "headers": copy.deepcopy(ALWAYS_HEADERS)}
    if schema:
        built["content"] = json_content(schema)
    built.update(extra)
    return built


def errors(*statuses: int) -> dict:
    return {str(s): answer(ERROR_TEXTS[s], "OperationOutcome") for s in statuses}


EXPLAIN_HEADERS = {
    "Content-Security-Policy": {
        "description": "Nothing but the page itself and its inline style is loaded.",
        "required": True,
        "schema": {"type": "string", "pattern": "^default-src 'none'"},
    }
}


def html(description: str) -> dict:
    page = answer(description, content={"text/html": {"schema": {"type": "string"}}})
    page["headers"].update(copy.deepcopy(EXPLAIN_HEADERS))
    return page


def explain_paths() -> dict:
    """The explanation pages (HTML generated from the loaded rules, no patient data)."""
    return {
        "/explain": {
            "get": {
                "operationId": "explainRules",
                "summary": "The rule catalogue for clinical review: every route and rule (HTML)",
                "responses": {"200": html("The catalogue"), **errors(404)},
            }
        },
        "/explain/{route}": {
            "get": {
                "operationId": "explainRoute",
                "summary": "One referral route explained, the rules given first (HTML)",
                "parameters": [
                    {
                        "name": "route",
                        "in": "path",
                        "required": True,
                        "description": "A referral route code, as in a card's source.topic.code",
                        "schema": {"type": "string", "minLength": 1, "example": "nephrology"},
                    },
                    {
                        "name": "rules",
                        "in": "query",
                        "required": False,
                        "description": "Comma-separated rule ids to show first (others dropped)",
                        "schema": {"type": "string"},
                        "example": "ckd-stage-4-5,egfr-below-30-known-ckd",
                    },
                ],
                "responses": {"200": html("The route's page"), **errors(404)},
            }
        },
    }


def operations_paths() -> dict:
    """Liveness, readiness, metrics and this document."""
    return {
        "/healthz": {
            "get": {
                "operationId": "liveness",
                "summary": "Liveness: the process answers",
                "responses": {"200": answer("Alive", "Health")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readiness",
                "summary": "Readiness: the store can be written",
                "responses": {
                    "200": answer("Ready", "Health"),
                    "503": answer("Not ready: the store is unavailable", "Health"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text format)",
                "responses": {
                    "200": answer(
                        "Metrics", content={"text/plain": {"schema": {"type": "string"}}}
                    ),
                    **errors(404),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": answer(
                        "OpenAPI 3.1",
                        content={"application/json": {"schema": {"type": "object"}}},
                    )
                },
            }
        },
    }
