"""The OpenAPI 3.1 document, and schemathesis over every operation (issue 14).

schemathesis runs in-process against the Flask app (WSGI), stateless over every operation
and stateful along the document's links (a hook call that issued cards, then feedback for
its first card). Checks: no 5xx, status codes, content types, headers and bodies as the
document says. Generated hook requests are given a leg-cramp Condition half of the time,
so the rules run and cards are issued, and the document's examples (``fhir_examples/``,
dated today) are among the cases, so real requests reach a 200 with cards; ``fhirServer``
always points at a closed loopback port (no generated URL reaches the network).
"""

from __future__ import annotations

import hypothesis
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cds_service import examples
from cds_service.config import Settings
from cds_service.protocol import hooks, services
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
    # Today's date, as the document's examples are dated today.
    app = create_app(
        Settings.from_env({}, auth_mode="off", data_dir=tmp_path_factory.mktemp("data"))
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
        "callHook_leg_cramp_order_sign",
        "postFeedback_leg_cramp_order_sign",
        "callHook_leg_cramp_order_select",
        "postFeedback_leg_cramp_order_select",
        "liveness",
        "readiness",
        "metrics",
        "openapi",
        "explainRules",
        "explainRoute",
    }


def _feedback_item_schema(document: dict) -> jsonschema.Draft202012Validator:
    items = document["components"]["schemas"]["feedback"]["properties"]["feedback"]["items"]
    return jsonschema.Draft202012Validator(
        items, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


@pytest.mark.parametrize(
    "timestamp, valid",
    [
        ("2026-11-24T10:00:00Z", True),
        ("2026-11-24T10:00:00.123456+05:30", True),
        ("2028-02-29T23:59:59-08:00", True),
        ("0000-00-00T00:00:00Z", False),
        ("2026-02-30T10:00:00Z", False),  # the format check: no such day
        ("2026-11-24T24:00:00Z", False),
        ("2026-11-24T10:00:60Z", False),
        ("2026-11-24T10:00:00", False),  # no offset
        ("2026-11-24T10:00:00+24:00", False),
    ],
)
def test_the_document_is_as_strict_as_the_service_on_outcome_timestamp(client, timestamp, valid):
    """What the document calls valid the service takes, and what it refuses is invalid."""
    document = client.get("/openapi.json").get_json()
    item = {"card": "c", "outcome": "overridden", "outcomeTimestamp": timestamp}
    item["overrideReason"] = {"userComment": "checked"}
    assert _feedback_item_schema(document).is_valid(item) is valid
    response = client.post("/cds-services/leg-cramp-referral/feedback", json={"feedback": [item]})
    assert (response.status_code != 400) is valid, response.get_json()


def test_the_hook_examples_are_the_example_files_dated_today(client):
    """Each service's path carries the examples of its hook; together, every example."""
    document = client.get("/openapi.json").get_json()
    seen = []
    for service in services.SERVICES:
        post = document["paths"][f"/cds-services/{service.id}"]["post"]
        shown = post["requestBody"]["content"]["application/json"]["examples"]
        assert shown, service.id
        for name, example in shown.items():
            hooks.validator(service.schema).validate(example["value"])
            assert example["value"] == examples.request(name, examples.today_utc())
        seen += list(shown)
    assert set(seen) >= set(examples.names())


def test_the_explain_pages_are_described(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    route = paths["/explain/{route}"]["get"]
    assert {p["name"] for p in route["parameters"]} == {"route", "rules"}
    assert set(route["responses"]) == {"200", "404"}
    assert "text/html" in route["responses"]["200"]["content"]
    assert client.get("/explain/nephrology").status_code == 200
    assert client.get("/explain/no-such-route").status_code == 404


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
        path = context.operation.path
        hook_call = path.startswith("/cds-services/") and not path.endswith("/feedback")
        if not hook_call or not isinstance(body, dict):
            return body
        if "fhirServer" in body:
            body["fhirServer"] = "http://127.0.0.1:9/fhir"  # refused at once, loopback only
        hook_instance, context = body.get("hookInstance"), body.get("context")
        if isinstance(hook_instance, str) and hook_instance.startswith("example-"):
            return body  # one of the document's examples: a real request, as it is
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
    examples_with_cards: set[str] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        # The document's own examples first (the hook's: every file of fhir_examples/),
        # then generated cases.
        strategy = st.one_of(*operation.get_strategies_from_examples(), operation.as_strategy())

        @hypothesis.given(case=strategy)
        @hypothesis.settings(max_examples=100 if operation.method == "post" else 5, **SETTINGS)
        def run(case):
            response = case.call_and_validate(checks=CHECKS)
            body = case.body if isinstance(case.body, dict) else {}
            example = str(body.get("hookInstance")).startswith("example-")
            if example and response.status_code == 200 and response.json()["cards"]:
                examples_with_cards.add(body["hookInstance"])  # a real request answered

        try:
            run()
        except Exception as exc:  # every operation runs; the failures are reported together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert examples_with_cards, "no example of the document reached a hook answer with cards"


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
                items = case.body.get("feedback")
                cards = {
                    i["card"]
                    for i in (items if isinstance(items, list) else [])
                    if isinstance(i, dict) and isinstance(i.get("card"), str)
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
