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

from cds_service import examples
from cds_service.protocol import hooks, services
from cds_service.protocol.services import Service
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


def operation_id(name: str, service: Service, first: bool) -> str:
    """``callHook``/``postFeedback`` for the first declared service (as before services
    were declared), ``callHook_leg_cramp_order_sign`` ... for the others."""
    if first:
        return name
    return f"{name}_{service.id.replace('-', '_').replace('.', '_')}"


def _discovery_path(bearer: list) -> dict:
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
        }
    }


def _service_paths(service: Service, bearer: list, first: bool) -> dict:
    """A declared service and its feedback."""
    path = f"/cds-services/{service.id}"
    feedback_op = operation_id("postFeedback", service, first)
    return {
        path: {
            "post": {
                "operationId": operation_id("callHook", service, first),
                "summary": f"Call the {service.hook} hook: {service.title}",
                "security": bearer,
                "requestBody": {
                    "required": True,
                    "content": json_content(service.schema, JSON_TYPES),
                },
                "responses": {
                    "200": answer(
                        "Cards (an empty list when there is no advice)",
                        "cds-response",
                        links={
                            "FeedbackOnFirstCard": {**FEEDBACK_LINK, "operationId": feedback_op}
                        },
                    ),
                    **errors(400, 401, 412, 413, 415, 503),
                },
            }
        },
        path + "/feedback": {
            "post": {
                "operationId": feedback_op,
                "summary": f"Card outcomes (accepted / overridden): {service.title}",
                "security": bearer,
                "requestBody": {"required": True, "content": json_content("feedback", JSON_TYPES)},
                "responses": {
                    "200": answer("Stored", "FeedbackAck"),
                    **errors(400, 401, 403, 413, 415, 429, 503),
                },
            }
        },
    }


FEEDBACK_LINK = {
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


@cache
def _document(declared: tuple[Service, ...]) -> dict:
    schemas = {
        uri[len(SCHEMA_PREFIX) :]: _point_refs(schema) for uri, schema in hooks._schemas().items()
    }
    schemas.update(
        {"OperationOutcome": OPERATION_OUTCOME, "FeedbackAck": FEEDBACK_ACK, "Health": HEALTH}
    )
    bearer: list[dict[str, list[str]]] = [
        {},
        {"cdsClientJwt": []},
    ]  # required only when CDS_AUTH_MODE=jwt
    cds_paths = _discovery_path(bearer)
    for i, service in enumerate(declared):
        cds_paths.update(_service_paths(service, bearer, i == 0))
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Leg-cramp referral CDS service",
            "version": hooks.SPEC_VERSION,
            "description": (
                "CDS Hooks 2.0 services (one path per service: "
                + ", ".join(f"{s.id} for {s.hook}" for s in declared)
                + "). Every error is a FHIR "
                "OperationOutcome. Paths are also served with a trailing slash. CORS is on "
                "for every endpoint (browser clients such as the CDS Hooks sandbox)."
            ),
        },
        "paths": {
            **cds_paths,
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
def hook_examples(today: date) -> dict[str, dict]:
    """The example hook requests as OpenAPI examples, dates moved to ``today``, by hook."""
    found: dict[str, dict] = {}
    for name in examples.names():
        value = examples.request(name, today)
        found.setdefault(str(value.get("hook")), {})[name] = {
            "summary": name.replace("-", " "),
            "value": value,
        }
    return found


def document(today: date | None = None, declared: tuple[Service, ...] | None = None) -> dict:
    """The OpenAPI document of the ``declared`` services (default: SERVICES), a fresh copy
    (callers may change it), each service's examples (those of its hook) dated for
    ``today`` (default: today, UTC)."""
    declared = declared or services.SERVICES
    built = copy.deepcopy(_document(declared))
    moved = hook_examples(today or examples.today_utc())
    for service in declared:
        request = built["paths"][f"/cds-services/{service.id}"]["post"]["requestBody"]
        for media in request["content"].values():
            if moved.get(service.hook):
                media["examples"] = copy.deepcopy(moved[service.hook])
    return built
