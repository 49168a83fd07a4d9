"""The HTTP contract: every endpoint, every error status, CORS, schema-valid bodies."""

from __future__ import annotations

import json

import pytest
from conftest import minimal_request

from cds_service import SERVICE_ID
from cds_service.protocol.hooks import validator

SERVICE = f"/cds-services/{SERVICE_ID}"
CRAMP = {
    "resourceType": "Condition",
    "id": "cramp1",
    "clinicalStatus": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
        ]
    },
    "code": {
        "coding": [
            {
                "system": "http://snomed.info/sct",
                "code": "449918009",
                "display": "Cramp in lower leg",
            }
        ]
    },
    "subject": {"reference": "Patient/p1"},
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
    "subject": {"reference": "Patient/p1"},
    "onsetDateTime": "2025-02-01",
}


def assert_outcome(response, status: int) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] in {"error", "fatal"} and issue["code"] and issue["details"]["text"]
    return body


def test_discovery_is_schema_valid_and_lists_prefetch(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    body = response.get_json()
    validator("discovery").validate(body)
    service = body["services"][0]
    assert service["id"] == SERVICE_ID and service["hook"] == "patient-view"
    assert {"title", "description", "usageRequirements", "version"} <= set(service)
    assert set(service["prefetch"]) == {
        "patient",
        "conditions",
        "observations",
        "procedures",
        "medications",
        "medicationstatements",
        "servicerequests",
    }
    assert "http://loinc.org|2823-3" in service["prefetch"]["observations"]
    for template in service["prefetch"].values():
        assert "{{context.patientId}}" in template and "today()" not in template


def test_patient_without_cramps_gets_no_cards(client):
    response = client.post(SERVICE, json=minimal_request(resources=[CKD4]))
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
    validator("cds-response").validate(response.get_json())


def test_hook_returns_schema_valid_cards(client):
    response = client.post(SERVICE, json=minimal_request(resources=[CRAMP, CKD4]))
    assert response.status_code == 200
    body = response.get_json()
    validator("cds-response").validate(body)
    routes = [card["source"]["topic"]["code"] for card in body["cards"]]
    assert "nephrology" in routes
    card = body["cards"][routes.index("nephrology")]
    assert len(card["summary"]) < 140 and card["uuid"]
    action = card["suggestions"][0]["actions"][0]
    assert action["resource"]["subject"] == {"reference": "Patient/p1"}
    assert {"reference": "Condition/ckd4"} in action["resource"]["reasonReference"]


def test_hook_body_is_decoded_from_the_bytes_http_guard_read(client, monkeypatch):
    """HttpGuard reads the body once; the view decodes those bytes, not a second copy read
    back through werkzeug's stream (four copies of a 160 kB body in 64 kB pieces)."""
    from werkzeug.wrappers import Request

    def read_again(*_args, **_kwargs):
        raise AssertionError("the body was read again through werkzeug's stream")

    monkeypatch.setattr(Request, "get_data", read_again)
    response = client.post(SERVICE, json=minimal_request(resources=[CRAMP, CKD4]))
    assert response.status_code == 200
    assert "nephrology" in [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]


def test_fhir_json_content_type_is_accepted(client):
    response = client.post(
        SERVICE,
        data=json.dumps(minimal_request()),
        content_type="application/fhir+json; charset=utf-8",
    )
    assert response.status_code == 200


def test_feedback_accepts_valid_items(client):
    body = {
        "feedback": [
            {
                "card": "c1",
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "s1"}],
                "outcomeTimestamp": "2026-11-24T10:00:00Z",
            },
            {
                "card": "c2",
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-24T10:00:00Z",
                "overrideReason": {
                    "reason": {
                        "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                        "code": "cds-not-applicable",
                        "display": "PC CDS does not apply to patient",
                    },
                    "userComment": "seen by nephrology last week",
                },
            },
        ]
    }
    assert client.post(f"{SERVICE}/feedback", json=body).status_code == 200


@pytest.mark.parametrize(
    "item, field",
    [
        (
            {
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "s"}],
                "outcomeTimestamp": "2026-11-24T10:00:00Z",
            },
            "card",
        ),
        (
            {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-24T10:00:00Z"},
            "acceptedSuggestions",
        ),
        ({"card": "c", "outcome": "maybe", "outcomeTimestamp": "2026-11-24T10:00:00Z"}, "outcome"),
        (
            {"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"},
            "outcomeTimestamp",
        ),
    ],
)
def test_feedback_rejects_invalid_items_naming_the_field(client, item, field):
    body = assert_outcome(client.post(f"{SERVICE}/feedback", json={"feedback": [item]}), 400)
    assert field in body["issue"][0]["details"]["text"]


def test_malformed_json_is_400(client):
    assert_outcome(client.post(SERVICE, data="{not json", content_type="application/json"), 400)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.pop("hookInstance"), "hookInstance"),
        (lambda r: r["context"].pop("patientId"), "patientId"),
        (lambda r: r.update(hook="order-sign"), "hook"),
        (lambda r: r["context"].update(patientId="../../etc"), "patientId"),
        (
            lambda r: r.update(
                fhirAuthorization={
                    "access_token": "x",
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "scope": "s",
                    "subject": "c",
                }
            ),
            "fhirServer",
        ),
        (lambda r: r.update(prefetch=[]), "prefetch"),
    ],
)
def test_schema_violation_is_400_naming_the_field(client, mutate, field):
    request = minimal_request()
    mutate(request)
    body = assert_outcome(client.post(SERVICE, json=request), 400)
    assert field in json.dumps(body)


def test_error_never_echoes_patient_data(client):
    request = minimal_request(patient_id="secret-id-123")
    request["context"]["patientId"] = "Jane Doe 1970-01-01"
    body = assert_outcome(client.post(SERVICE, json=request), 400)
    assert "Jane" not in json.dumps(body) and "1970" not in json.dumps(body)


def test_body_must_be_an_object(client):
    assert_outcome(client.post(SERVICE, json=[1, 2, 3]), 400)
    assert_outcome(client.post(SERVICE, json="text"), 400)


def test_unknown_service_is_404(client):
    assert_outcome(client.post("/cds-services/nope", json=minimal_request()), 404)
    assert_outcome(client.post("/cds-services/nope/feedback", json={"feedback": []}), 404)
    assert_outcome(client.get("/no-such-path"), 404)


def test_wrong_method_is_405(client):
    body = assert_outcome(client.get(SERVICE), 405)
    assert body
    assert_outcome(client.delete("/cds-services"), 405)


def test_non_json_content_type_is_415(client):
    assert_outcome(client.post(SERVICE, data="hook=patient-view", content_type="text/plain"), 415)
    assert_outcome(client.post(SERVICE, data=b"x"), 415)


def test_body_over_limit_is_413(tmp_path):
    from cds_service.config import Settings
    from cds_service.web.app import create_app

    small = create_app(
        Settings.from_env({}, today="2026-11-24", data_dir=tmp_path, max_body_bytes=2048)
    ).test_client()
    request = minimal_request()
    request["padding"] = "x" * 4096
    assert_outcome(small.post(SERVICE, json=request), 413)


def test_missing_required_prefetch_without_fhir_server_is_412(client):
    request = minimal_request()
    del request["prefetch"]["conditions"]
    body = assert_outcome(client.post(SERVICE, json=request), 412)
    assert "conditions" in body["issue"][0]["details"]["text"]
    request["prefetch"]["conditions"] = None
    assert_outcome(client.post(SERVICE, json=request), 412)


def test_missing_optional_prefetch_still_gives_cards(client):
    request = minimal_request(resources=[CRAMP, CKD4])
    del request["prefetch"]["servicerequests"]
    response = client.post(SERVICE, json=request)
    assert response.status_code == 200 and response.get_json()["cards"]


def test_cors_preflight_allows_authorization_and_content_type(client):
    response = client.options(
        SERVICE,
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://sandbox.cds-hooks.org")
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


def test_cors_headers_on_success_and_error(client):
    origin = {"Origin": "https://sandbox.cds-hooks.org"}
    assert "Access-Control-Allow-Origin" in client.get("/cds-services", headers=origin).headers
    bad = client.post(SERVICE, data="{", content_type="application/json", headers=origin)
    assert bad.status_code == 400 and "Access-Control-Allow-Origin" in bad.headers


def test_no_cors_headers_for_calls_without_origin(app, client):
    # Server-to-server EHR calls carry no Origin: flask-cors's own always_send=False.
    response = client.post(SERVICE, json=minimal_request())
    assert response.status_code == 200
    assert not [h for h in response.headers.keys() if h.lower().startswith("access-control")]
    with_origin = client.post(
        SERVICE, json=minimal_request(), headers={"Origin": "https://sandbox.cds-hooks.org"}
    )
    assert "Access-Control-Allow-Origin" in with_origin.headers


def test_cors_origins_are_configurable(tmp_path):
    from cds_service.config import Settings
    from cds_service.web.app import create_app

    app = create_app(
        Settings.from_env(
            {"CDS_CORS_ORIGINS": "https://ehr.example.org"}, today="2026-11-24", data_dir=tmp_path
        )
    )
    client = app.test_client()
    good = client.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
    assert good.headers.get("Access-Control-Allow-Origin") == "https://ehr.example.org"
    evil = client.get("/cds-services", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in evil.headers


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_unexpected_error_is_500_outcome_without_traceback(app, monkeypatch):
    service = app.extensions["cds"]

    def boom(_request, *_declared):  # CdsService.call names the service
        raise RuntimeError("secret patient detail")

    monkeypatch.setattr(service, "evaluate", boom)
    response = app.test_client().post(SERVICE, json=minimal_request())
    body = assert_outcome(response, 500)
    assert "secret" not in json.dumps(body) and "Traceback" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "garbage",
    [
        {"resourceType": "Bundle", "entry": [None, 1, "x", {"resource": []}]},
        {
            "resourceType": "Bundle",
            "entry": [{"resource": {"resourceType": "Condition", "code": "R25.2"}}],
        },
        {
            "resourceType": "Bundle",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Observation",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
                        "status": "final",
                        "effectiveDateTime": "not a date",
                        "valueQuantity": {"value": "abc", "code": None},
                    }
                }
            ],
        },
        {"resourceType": "Bundle", "entry": {"not": "a list"}},
    ],
)
def test_malformed_fhir_content_never_500s(client, garbage):
    request = minimal_request(resources=[CRAMP])
    request["prefetch"]["observations"] = garbage
    response = client.post(SERVICE, json=request)
    assert response.status_code in (200, 400, 412)
    if response.status_code == 200:
        validator("cds-response").validate(response.get_json())


def test_feedback_with_an_impossible_timestamp_is_400(client):
    item = {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-13-40T10:00:00Z"}
    body = assert_outcome(client.post(f"{SERVICE}/feedback", json={"feedback": [item]}), 400)
    assert "feedback[0].outcomeTimestamp" in body["issue"][0]["details"]["text"]


def test_medication_referenced_by_medication_request_is_recognised(client):
    """A MedicationRequest pointing at an (_include'd) Medication is classified by its codes."""
    request = minimal_request(resources=[CRAMP])
    order = {
        "resourceType": "MedicationRequest",
        "id": "mr1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationReference": {"reference": "Medication/med1"},
        "authoredOn": "2026-10-01",
    }
    medication = {
        "resourceType": "Medication",
        "id": "med1",
        "code": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "83367",
                    "display": "atorvastatin",
                }
            ]
        },
    }
    request["prefetch"]["medications"]["entry"] = [
        {"resource": order, "search": {"mode": "match"}},
        {"resource": medication, "search": {"mode": "include"}},
    ]
    cards = client.post(SERVICE, json=request).get_json()["cards"]
    review = [c for c in cards if c["source"]["topic"]["code"] == "medication-review"]
    assert review and "atorvastatin" in review[0]["detail"]
    template = client.get("/cds-services").get_json()["services"][0]["prefetch"]["medications"]
    assert "_include=MedicationRequest:medication" in template


def _critical_potassium(**extra) -> dict:
    resource = {
        "resourceType": "Observation",
        "id": "k1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-11-23",
        "valueQuantity": {
            "value": 2.1,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
    }
    resource.update(extra)
    return resource


def _routes(client, *resources) -> list[str]:
    response = client.post(SERVICE, json=minimal_request(resources=[CRAMP, *resources]))
    assert response.status_code == 200
    return [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]


def test_evidence_that_fails_fhir_validation_is_not_used(client, caplog):
    assert "urgent-care" in _routes(client, _critical_potassium())
    broken = _critical_potassium(subject={"reference": 5})  # Reference.reference is a string
    assert "urgent-care" not in _routes(client, broken)
    assert "invalid Observation" in caplog.text and "p1" not in caplog.text


@pytest.mark.parametrize(
    "extra",
    [
        {"subject": "Patient/p1"},
        {"status": ["final"]},
        {"valueQuantity": {"value": 2.1, "code": ["mmol/L"]}},
        {"code": "2823-3"},
        {"contained": 3},
    ],
)
def test_a_resource_with_a_wrongly_typed_element_is_left_out(client, extra):
    assert "urgent-care" not in _routes(client, _critical_potassium(**extra))


@pytest.mark.parametrize(
    "extra", [{"effectivePeriod": "yesterday"}, {"issued": "2026-11-23"}, {"issued": 5}]
)
def test_a_malformed_date_beside_a_readable_one_costs_only_itself(client, extra):
    """The reading layer reads the effective time; a second date in a wrong form or type
    (``issued`` is an instant) must not cost the result (issue 21)."""
    assert "urgent-care" in _routes(client, _critical_potassium(**extra))


def test_data_about_another_patient_is_ignored(client):
    other = _critical_potassium(subject={"reference": "Patient/someone-else"})
    assert "urgent-care" not in _routes(client, other)
    absolute = _critical_potassium(subject={"reference": "https://ehr.example.org/fhir/Patient/p1"})
    assert "urgent-care" in _routes(client, absolute)


def test_a_malformed_element_no_rule_reads_does_not_hide_a_result(client):
    noisy = _critical_potassium(note="free text where a list of Annotation belongs")
    assert "urgent-care" in _routes(client, noisy)


@pytest.mark.parametrize(
    "observations",
    [
        {"resourceType": "Bundle", "entry": 5},
        {"resourceType": "Bundle", "link": 7, "entry": []},
        {
            "resourceType": "Bundle",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Observation",
                        "id": "c0",
                        "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
                        "subject": {"reference": "Patient/p1"},
                        "effectiveDateTime": "2026-11-20",
                        "valueQuantity": {"value": 0, "unit": "mg/dL", "code": "mg/dL"},
                    }
                }
            ],
        },
    ],
)
def test_odd_bundles_and_zero_creatinine_never_500(client, observations):
    request = minimal_request(resources=[CRAMP])
    request["prefetch"]["observations"] = observations
    assert client.post(SERVICE, json=request).status_code == 200


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_feedback_timestamps_at_the_edge_of_time_are_400(client, stamp):
    item = {"card": "c", "outcome": "overridden", "outcomeTimestamp": stamp}
    assert_outcome(client.post(f"{SERVICE}/feedback", json={"feedback": [item]}), 400)


def test_evidence_reached_through_two_criteria_is_listed_once(client):
    egfr = {
        "resourceType": "Observation",
        "id": "egfr1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "98979-8"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-11-13",
        "valueQuantity": {"value": 22, "unit": "mL/min/1.73m2", "code": "mL/min/{1.73_m2}"},
    }
    response = client.post(SERVICE, json=minimal_request(resources=[CRAMP, CKD4, egfr]))
    card = next(
        c for c in response.get_json()["cards"] if c["source"]["topic"]["code"] == "nephrology"
    )
    assert card["detail"].count("(ICD-10-CM N18.4)") + card["detail"].count("431857002") == 1
    assert card["detail"].count("eGFR 22") == 1


# -- serving hygiene (issue 14) ---------------------------------------------------------

ALWAYS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
SANDBOX = "https://sandbox.cds-hooks.org"


def assert_always_headers(response) -> None:
    for name, value in ALWAYS.items():
        assert response.headers.get(name) == value, name


def test_every_response_carries_no_store_and_nosniff(client):
    preflight = {
        "Origin": SANDBOX,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    for response in (
        client.get("/cds-services"),
        client.post(SERVICE, json=minimal_request()),
        client.post(SERVICE, data="{", content_type="application/json"),
        client.get("/no-such-path"),
        client.get("/healthz"),
        client.get("/metrics"),
        client.options(SERVICE, headers=preflight),
        client.delete("/cds-services"),
    ):
        assert_always_headers(response)


def test_discovery_with_a_trailing_slash_is_served_with_its_preflight(client):
    plain = client.get("/cds-services")
    slash = client.get("/cds-services/")
    assert slash.status_code == 200 and slash.get_json() == plain.get_json()
    preflight = client.options(
        "/cds-services/",
        headers={
            "Origin": SANDBOX,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] in ("*", SANDBOX)
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    assert_always_headers(preflight)
    assert client.post(SERVICE + "/", json=minimal_request()).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "//cds-services",
        "/cds-services//",
        "//evil.example.com/x",
        "///healthz",
        "/cds-services//leg-cramp-referral",
    ],
)
def test_double_slashes_never_redirect(client, path):
    response = client.get(path, headers={"Host": "evil.example.com"})
    assert "Location" not in response.headers
    assert response.status_code in (200, 404, 405)
    if response.status_code != 200:
        assert_outcome(response, response.status_code)


def test_feedback_success_is_json(client):
    item = {
        "card": "c1",
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-24T10:00:00Z",
        "overrideReason": {"userComment": "seen last week"},
    }
    response = client.post(f"{SERVICE}/feedback", json={"feedback": [item]})
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == {"status": "stored", "items": 1}


@pytest.mark.parametrize(
    "reason",
    [
        {},
        {"unknown": 1},
        {"reason": {}},
        {"reason": {"code": "x"}},
        {"reason": "x"},
        {"reason": {"system": "s", "code": ""}},
        {"userComment": ""},
        {"userComment": 5},
        {"reason": {"system": "s", "code": "c" * 300}},
        {"userComment": "nul \u0000 byte"},
    ],
)
def test_malformed_override_reason_is_400_naming_it(client, reason):
    item = {
        "card": "c",
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-24T10:00:00Z",
        "overrideReason": reason,
    }
    body = assert_outcome(client.post(f"{SERVICE}/feedback", json={"feedback": [item]}), 400)
    assert "feedback[0].overrideReason" in body["issue"][0]["details"]["text"]


def test_over_limit_body_errors_carry_cors_for_the_sandbox(tmp_path):
    from cds_service.config import Settings
    from cds_service.web.app import create_app

    small = create_app(
        Settings.from_env({}, today="2026-11-24", data_dir=tmp_path, max_body_bytes=2048)
    ).test_client()
    request = minimal_request()
    request["padding"] = "x" * 4096
    response = small.post(SERVICE, json=request, headers={"Origin": SANDBOX})
    assert_outcome(response, 413)
    assert "Access-Control-Allow-Origin" in response.headers
    assert_always_headers(response)


@pytest.mark.parametrize("field", ["clinicalStatus", "verificationStatus"])
@pytest.mark.parametrize("coding", [True, -1, 1.5, 5])
def test_a_status_coding_that_is_not_a_list_never_500s(client, field, coding):
    condition = dict(CRAMP, **{field: {"coding": coding}})
    assert client.post(SERVICE, json=minimal_request(resources=[condition])).status_code != 500
