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
from cds_service.web.openapi_parts import (
    answer,
    errors,
    explain_paths,
    json_content,
    operations_paths,
)

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


def _cds_paths(service: str, bearer: list, feedback_link: dict) -> dict:
    """Discovery, the service and its feedback."""
    return {
        "/cds-services": {
            "get": {
                "operationId": "discovery",
                "summary": "CDS Hooks discovery",
                "security": bearer,
                "responses": {
                    "200": answer("The services offered", "discovery"),
                    **errors(401, 503),
                },
            }
        },
        service: {
            "post": {
                "operationId": "callHook",
                "summary": "Call the patient-view hook",
                "security": bearer,
                "requestBody": {
                    "required": True,
                    "content": json_content("hook-request", JSON_TYPES),
                },
                "responses": {
                    "200": answer(
                        "Cards (an empty list when there is no advice)",
                        "cds-response",
                        links={"FeedbackOnFirstCard": feedback_link},
                    ),
                    **errors(400, 401, 412, 413, 415, 503),
                },
            }
        },
        service + "/feedback": {
            "post": {
                "operationId": "postFeedback",
                "summary": "Card outcomes (accepted / overridden)",
                "security": bearer,
                "requestBody": {"required": True, "content": json_content("feedback", JSON_TYPES)},
                "responses": {
                    "200": answer("Stored", "FeedbackAck"),
                    **errors(400, 401, 403, 413, 415, 429, 503),
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
            **explain_paths(),
            **operations_paths(),
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
