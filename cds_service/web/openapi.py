"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``.

The request and response bodies are the JSON Schemas the service itself validates with
(``cds_service/schemas/*.json``, loaded through ``hooks``): they are embedded under
``components/schemas`` when the document is built, with their ``urn:leg-cramp-cds:schema:*``
references pointed at those components, so the document cannot drift from the validation.
Only what no shipped schema describes (OperationOutcome, the feedback acknowledgement,
health answers) is written here.

The hook's 200 answer links to the feedback operation (``FeedbackOnFirstCard``) with the
uuid of the first card, so stateful clients and fuzzers can issue a card, then report on it.
The hook's request body carries the example requests of ``fhir_examples/`` as OpenAPI
examples, their dates moved to the day the document is asked for (``cds_service.examples``),
so a client trying one, or schemathesis, reaches a real answer with cards.
"""

from __future__ import annotations

import copy
from datetime import date
from functools import cache, lru_cache

from cds_service import SERVICE_ID, examples
from cds_service.protocol import hooks

SCHEMA_PREFIX = "urn:leg-cramp-cds:schema:"
JSON_TYPES = ("application/json", "application/fhir+json")

OPERATION_OUTCOME = {
    "title": "FHIR OperationOutcome, as every error of this service is answered",
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string", "minLength": 1},
                    "details": {
                        "type": "object",
                        "properties": {"text": {"type": "string", "minLength": 1}},
                    },
                    "diagnostics": {"type": "string"},
                },
            },
        },
    },
}
FEEDBACK_ACK = {
    "title": "Feedback stored (duplicates of stored items are ignored)",
    "type": "object",
    "required": ["status", "items"],
    "properties": {"status": {"const": "stored"}, "items": {"type": "integer", "minimum": 1}},
}
HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"enum": ["ok", "unavailable"]},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
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
    404: "Unknown endpoint (or metrics disabled, or an unknown referral route)",
    412: "Required data is missing and could not be fetched from fhirServer",
    413: "Request body larger than CDS_MAX_BODY_BYTES",
    415: "Content-Type is not JSON",
    503: "The store is unavailable; retry later",
}


def _point_refs(node):
    """Copy of a shipped schema with its URN references pointed at the components."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in ("$id", "$schema"):
                continue
            if key == "$ref" and isinstance(value, str) and value.startswith(SCHEMA_PREFIX):
                value = "#/components/schemas/" + value[len(SCHEMA_PREFIX) :]
            out[key] = _point_refs(value)
        return out
    if isinstance(node, list):
        return [_point_refs(item) for item in node]
    return node


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, types=("application/json",)) -> dict:
    return {media: {"schema": _ref(name)} for media in types}


def _answer(description: str, schema: str | None = None, **extra) -> dict:
    answer = {"description": description, "headers": copy.deepcopy(ALWAYS_HEADERS)}
    if schema:
        answer["content"] = _json(schema)
    answer.update(extra)
    return answer


def _errors(*statuses: int) -> dict:
    return {str(s): _answer(ERROR_TEXTS[s], "OperationOutcome") for s in statuses}


def _cds_paths(service: str, bearer: list, feedback_link: dict) -> dict:
    """Discovery, the service and its feedback."""
    return {
        "/cds-services": {
            "get": {
                "operationId": "discovery",
                "summary": "CDS Hooks discovery",
                "security": bearer,
                "responses": {
                    "200": _answer("The services offered", "discovery"),
                    **_errors(401, 503),
                },
            }
        },
        service: {
            "post": {
                "operationId": "callHook",
                "summary": "Call the patient-view hook",
                "security": bearer,
                "requestBody": {"required": True, "content": _json("hook-request", JSON_TYPES)},
                "responses": {
                    "200": _answer(
                        "Cards (an empty list when there is no advice)",
                        "cds-response",
                        links={"FeedbackOnFirstCard": feedback_link},
                    ),
                    **_errors(400, 401, 412, 413, 415, 503),
                },
            }
        },
        service + "/feedback": {
            "post": {
                "operationId": "postFeedback",
                "summary": "Card outcomes (accepted / overridden)",
                "security": bearer,
                "requestBody": {"required": True, "content": _json("feedback", JSON_TYPES)},
                "responses": {
                    "200": _answer("Stored", "FeedbackAck"),
                    **_errors(400, 401, 413, 415, 503),
                },
            }
        },
    }


EXPLAIN_HEADERS = {
    "Content-Security-Policy": {
        "description": "Nothing but the page itself and its inline style is loaded.",
        "required": True,
        "schema": {"type": "string", "pattern": "^default-src 'none'"},
    }
}


def _html(description: str) -> dict:
    answer = _answer(description, content={"text/html": {"schema": {"type": "string"}}})
    answer["headers"].update(copy.deepcopy(EXPLAIN_HEADERS))
    return answer


def _explain_paths() -> dict:
    """The explanation pages (HTML generated from the loaded rules, no patient data)."""
    return {
        "/explain": {
            "get": {
                "operationId": "explainRules",
                "summary": "The rule catalogue for clinical review: every route and rule (HTML)",
                "responses": {"200": _html("The catalogue"), **_errors(404)},
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
                "responses": {"200": _html("The route's page"), **_errors(404)},
            }
        },
    }


def _operations_paths() -> dict:
    """Liveness, readiness, metrics and this document."""
    return {
        "/healthz": {
            "get": {
                "operationId": "liveness",
                "summary": "Liveness: the process answers",
                "responses": {"200": _answer("Alive", "Health")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readiness",
                "summary": "Readiness: the store can be written",
                "responses": {
                    "200": _answer("Ready", "Health"),
                    "503": _answer("Not ready: the store is unavailable", "Health"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text format)",
                "responses": {
                    "200": _answer(
                        "Metrics", content={"text/plain": {"schema": {"type": "string"}}}
                    ),
                    **_errors(404),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": _answer(
                        "OpenAPI 3.1",
                        content={"application/json": {"schema": {"type": "object"}}},
                    )
                },
            }
        },
    }


@cache
def _document() -> dict:
    schemas = {
        uri[len(SCHEMA_PREFIX) :]: _point_refs(schema) for uri, schema in hooks._schemas().items()
    }
    schemas.update(
        {"OperationOutcome": OPERATION_OUTCOME, "FeedbackAck": FEEDBACK_ACK, "Health": HEALTH}
    )
    service = f"/cds-services/{SERVICE_ID}"
    bearer: list[dict[str, list[str]]] = [
        {},
        {"cdsClientJwt": []},
    ]  # required only when CDS_AUTH_MODE=jwt
    feedback_link = {
        "operationId": "postFeedback",
        "description": "Report an outcome for the first card of this answer.",
        "requestBody": {
            "feedback": [
                {
                    "card": "$response.body#/cards/0/uuid",
                    "outcome": "overridden",
                    "outcomeTimestamp": "2026-11-24T10:00:00Z",
                    "overrideReason": {"userComment": "reported by an API client"},
                }
            ]
        },
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Leg-cramp referral CDS service",
            "version": hooks.SPEC_VERSION,
            "description": (
                "A CDS Hooks 2.0 service for the patient-view hook. Every error is a FHIR "
                "OperationOutcome. Paths are also served with a trailing slash. CORS is on "
                "for every endpoint (browser clients such as the CDS Hooks sandbox)."
            ),
        },
        "paths": {
            **_cds_paths(service, bearer, feedback_link),
            **_explain_paths(),
            **_operations_paths(),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "cdsClientJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "CDS Hooks client JWT (ES/RS/PS 256-512), aud = the URL called",
                }
            },
        },
    }


@lru_cache(maxsize=2)
def hook_examples(today: date) -> dict:
    """The example hook requests as OpenAPI examples, dates moved to ``today``."""
    found = {}
    for name in examples.names():
        found[name] = {
            "summary": name.replace("-", " "),
            "value": examples.request(name, today),
        }
    return found


def document(today: date | None = None) -> dict:
    """The OpenAPI document (a fresh copy: callers may change it), the hook's examples
    dated for ``today`` (default: today, UTC)."""
    built = copy.deepcopy(_document())
    request = built["paths"][f"/cds-services/{SERVICE_ID}"]["post"]["requestBody"]
    moved = hook_examples(today or examples.today_utc())
    for media in request["content"].values():
        media["examples"] = copy.deepcopy(moved)
    return built
