"""The OpenAPI 3.1 document, and schemathesis over every operation (issue 14).

schemathesis runs in-process against the Flask app (WSGI), stateless over every operation
and stateful along the document's links (a hook call that issued cards, then feedback for
its first card). Checks: no 5xx, status codes, content types, headers and bodies as the
document says. Generated hook requests are given a leg-cramp Condition half of the time,
so the rules run and cards are issued; ``fhirServer`` always points at a closed loopback
port (no generated URL reaches the network).
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cds_service.config import Settings
from cds_service.protocol import hooks
from cds_service.web import openapi
from cds_service.web.app import create_app

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SETTINGS = dict(
    deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
CRAMP = {
    "resourceType": "Condition",
    "id": "cramp1",
    "clinicalStatus": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
        ]
    },
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "449918009"}]},
}
CKD4 = {
    "resourceType": "Condition",
    "id": "ckd4",
    "clinicalStatus": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
        ]
    },
    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "N18.4"}]},
}


@pytest.fixture(scope="module")
def api_app(tmp_path_factory):
    app = create_app(
        Settings.from_env(
            {}, today="2026-11-24", auth_mode="off", data_dir=tmp_path_factory.mktemp("data")
        )
    )
    yield app
    app.extensions["cds_store"].close()


def test_the_document_is_valid_openapi_3_1(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.get_json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert {op["operationId"] for path in document["paths"].values() for op in path.values()} == {
        "discovery",
        "callHook",
        "postFeedback",
        "liveness",
        "readiness",
        "metrics",
        "openapi",
    }


def test_the_document_embeds_the_shipped_schemas_unchanged(client):
    components = client.get("/openapi.json").get_json()["components"]["schemas"]
    for uri, shipped in hooks._schemas().items():
        name = uri.removeprefix(openapi.SCHEMA_PREFIX)
        assert components[name] == openapi._point_refs(shipped)  # one source, no drift
    refs = []

    def walk(node):
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(components)
    assert refs and all(
        r.startswith("#/components/schemas/") and r.split("/")[-1] in components for r in refs
    )


def _schema(app):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)

    @schema.hook
    def map_body(context, body):
        if context.operation.path != "/cds-services/leg-cramp-referral" or not isinstance(
            body, dict
        ):
            return body
        if "fhirServer" in body:
            body["fhirServer"] = "http://127.0.0.1:9/fhir"  # refused at once, loopback only
        hook_instance, context = body.get("hookInstance"), body.get("context")
        if isinstance(hook_instance, str) and len(hook_instance) % 2 == 0:  # half: with cards
            patient = context.get("patientId") if isinstance(context, dict) else None
            patient = patient if isinstance(patient, str) else "p1"
            resources = [
                dict(r, subject={"reference": f"Patient/{patient}"}) for r in (CRAMP, CKD4)
            ]
            bundle = {"resourceType": "Bundle", "type": "searchset", "entry": []}
            body["prefetch"] = {
                key: dict(bundle)
                for key in ("observations", "procedures", "medications", "servicerequests")
            }
            body["prefetch"]["conditions"] = dict(
                bundle, entry=[{"resource": r} for r in resources]
            )
            body["prefetch"]["patient"] = {"resourceType": "Patient", "id": patient}
        return body

    return schema


def test_schemathesis_every_operation(api_app):
    schema = _schema(api_app)
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=100 if operation.method == "post" else 5, **SETTINGS)
        def run(case):
            case.call_and_validate(checks=CHECKS)

        try:
            run()
        except Exception as exc:  # every operation runs; the failures are reported together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_schemathesis_stateful_cards_then_feedback(api_app):
    schema = _schema(api_app)
    seen = {"cards": 0, "feedback_for_issued_card": 0}

    class CardsThenFeedback(schema.as_state_machine()):
        def after_call(self, response, case):
            super().after_call(response, case)
            if case.operation.path.endswith("/leg-cramp-referral") and response.status_code == 200:
                seen["cards"] += len(response.json()["cards"])
                issued.update(c["uuid"] for c in response.json()["cards"])
            if case.operation.path.endswith("/feedback") and isinstance(case.body, dict):
                cards = {
                    i.get("card") for i in case.body.get("feedback") or [] if isinstance(i, dict)
                }
                if cards & issued and response.status_code == 200:
                    seen["feedback_for_issued_card"] += 1

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS)

    issued: set[str] = set()
    CardsThenFeedback.run(
        settings=hypothesis.settings(max_examples=60, stateful_step_count=5, **SETTINGS)
    )
    assert seen["cards"] > 0, "no hook call issued a card"
    assert seen["feedback_for_issued_card"] > 0, "no feedback followed the link to a card"
