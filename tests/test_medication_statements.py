"""MedicationStatement (issue 21): what the patient is recorded as taking counts like an order.

A statin recorded as a MedicationStatement, coded or referencing a contained or bundled
Medication, gets the medication review; a statement that does not say the patient takes the
medicine now does not, and does not count as treatment either. A statement and an order of
the same medicine give one evidence line. The ``medicationstatements`` prefetch key is
fetched from ``fhirServer`` when missing, and is optional: when it fails, the other cards stay.
"""

from __future__ import annotations

import copy
import logging

import pytest
from fhir_server import FhirServer, fhir_response, outcome
from pytest_httpserver import HTTPServer
from routes_helpers import (
    PATIENT_ID,
    SYSTEMS,
    condition,
    day,
    evaluate,
    hook_request,
    medication,
    normal_workup,
    route_of,
    searchset,
)

from cds_service.config import Settings
from cds_service.engine.criteria.medication import STATEMENT_TAKEN
from cds_service.service import CdsService

TOKEN = "statement-token-7c1e"
SIMVASTATIN_40 = ("198211", "simvastatin 40 MG Oral Tablet")
ATORVASTATIN_10 = ("617312", "atorvastatin 10 MG Oral Tablet")
ATORVASTATIN_20 = ("617310", "atorvastatin 20 MG Oral Tablet")
DVT = "I82.401"


def rxnorm(code: str, display: str) -> dict:
    return {"coding": [{"system": SYSTEMS["rxnorm"], "code": code, "display": display}]}


def statement(
    drug: tuple[str, str] | None = ATORVASTATIN_10,
    *,
    status: str = "active",
    started: int | None = 60,
    rid: str = "ms1",
    **elements,
) -> dict:
    """A MedicationStatement taken since ``started`` days ago, coded in RxNorm unless
    ``elements`` give the medicine another way (``medicationReference``, ``contained``)."""
    resource = {
        "resourceType": "MedicationStatement",
        "id": rid,
        "status": status,
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "dateAsserted": day(3),
    }
    if drug is not None:
        resource["medicationCodeableConcept"] = rxnorm(*drug)
    if started is not None:
        resource["effectivePeriod"] = {"start": day(started)}
    resource.update(elements)
    return resource


def bundled_medication(drug: tuple[str, str], rid: str = "med1") -> dict:
    return {"resourceType": "Medication", "id": rid, "code": rxnorm(*drug)}


def request_with(*statement_bundle: dict, others: tuple[dict, ...] = ()) -> dict:
    """A hook request with a normal workup (no workup card), ``others`` under their usual
    keys and ``statement_bundle`` (statements, included Medications) as medicationstatements."""
    request = hook_request(*others, *normal_workup())
    request["prefetch"]["medicationstatements"] = searchset(list(statement_bundle))
    return request


def cards(request: dict) -> dict[str, dict]:
    return {route_of(card): card for card in evaluate(request)["cards"]}


def evidence_lines(card: dict) -> list[str]:
    evidence = card["detail"].split("**Evidence**")[1].split("**")[0]
    return [line for line in evidence.splitlines() if line.startswith("- ")]


# --------------------------------------------------------------------------- firing


def test_active_statin_statement_gets_a_medication_review_card():
    card = cards(request_with(statement(ATORVASTATIN_10, started=60)))["medication-review"]
    [line] = evidence_lines(card)
    assert "atorvastatin 10 MG Oral Tablet: Statin, active" in line
    assert f"recorded as taken since {day(60)}" in line and "ordered" not in line
    assert "RxNorm 617312" in line


def test_statement_without_a_start_date_says_so_without_inventing_an_order():
    card = cards(request_with(statement(started=None)))["medication-review"]
    [line] = evidence_lines(card)
    assert "recorded as taken (" in line and "order date" not in line


def test_contained_medication_by_reference():
    taken = statement(
        None,
        contained=[bundled_medication(SIMVASTATIN_40, rid="med")],
        medicationReference={"reference": "#med"},
    )
    card = cards(request_with(taken))["medication-review"]
    [line] = evidence_lines(card)
    assert line.startswith("- simvastatin 40 MG Oral Tablet: Statin, active")
    assert "RxNorm 198211" in line


def test_medication_in_the_bundle_by_reference():
    taken = statement(None, medicationReference={"reference": "Medication/med1"})
    card = cards(request_with(taken, bundled_medication(SIMVASTATIN_40)))["medication-review"]
    [line] = evidence_lines(card)
    assert "simvastatin 40 MG Oral Tablet: Statin" in line and "RxNorm 198211" in line


def test_medication_included_with_the_orders_serves_a_statement_too():
    """Medications are one pool, whichever key's ``_include`` brought them."""
    taken = statement(None, medicationReference={"reference": "Medication/med1"})
    request = request_with(taken)
    request["prefetch"]["medications"]["entry"].append(
        {"resource": bundled_medication(SIMVASTATIN_40), "search": {"mode": "include"}}
    )
    assert "RxNorm 198211" in cards(request)["medication-review"]["detail"]


def test_reference_display_alone_is_matched_by_name():
    taken = statement(None, medicationReference={"display": "Zocor 20 mg tablet"})
    line = evidence_lines(cards(request_with(taken))["medication-review"])[0]
    assert line.startswith("- Zocor 20 mg tablet: Statin (simvastatin)") and "by name" in line


# --------------------------------------------------------------------------- near misses


@pytest.mark.parametrize(
    "status",
    ["stopped", "not-taken", "entered-in-error", "completed", "unknown", "intended", "on-hold"],
)
def test_statement_that_does_not_say_the_patient_takes_it_gets_no_card(status):
    assert "medication-review" not in cards(request_with(statement(status=status)))


def test_only_active_means_taken():
    assert STATEMENT_TAKEN == ("active",)


@pytest.mark.parametrize(
    "elements",
    [
        {"contained": [bundled_medication(SIMVASTATIN_40, rid="med")]},  # not referenced
        {
            "contained": [bundled_medication(SIMVASTATIN_40, rid="med")],
            "medicationReference": {"reference": "#other"},
        },
        {"medicationReference": {"reference": "Medication/absent"}},
    ],
    ids=["contained-unreferenced", "reference-to-another-id", "reference-not-in-bundle"],
)
def test_unresolvable_medication_gets_no_card(elements):
    assert "medication-review" not in cards(request_with(statement(None, **elements)))


def test_statement_about_another_patient_is_left_out():
    other = statement(subject={"reference": "Patient/someone-else"})
    assert "medication-review" not in cards(request_with(other))


def test_non_statin_statement_gets_no_card():
    lisinopril = statement(("29046", "lisinopril"))
    assert "medication-review" not in cards(request_with(lisinopril))


# --------------------------------------------------------------------------- one fact


@pytest.mark.parametrize(
    "order_days, statement_days, expected",
    [(60, 10, "recorded as taken since"), (10, 60, "ordered")],
    ids=["statement-newer", "order-newer"],
)
def test_statement_and_order_of_one_medicine_make_one_evidence_line(
    order_days, statement_days, expected
):
    order = medication(*ATORVASTATIN_10, authored=order_days)
    taken = statement(ATORVASTATIN_20, started=statement_days)
    card = cards(request_with(taken, others=(order,)))["medication-review"]
    lines = evidence_lines(card)
    assert len(lines) == 1, lines
    assert expected in lines[0]


def test_statement_and_order_of_two_statins_make_two_lines():
    order = medication(*ATORVASTATIN_10, authored=60)
    taken = statement(SIMVASTATIN_40, started=30)
    lines = evidence_lines(cards(request_with(taken, others=(order,)))["medication-review"])
    assert len(lines) == 2
    assert any("ordered" in line for line in lines)
    assert any("recorded as taken" in line for line in lines)


# --------------------------------------------------------------------------- as treatment


def test_anticoagulant_taken_since_the_dvt_makes_it_a_warning():
    """The statement is read as an exception too: an anticoagulant taken since the DVT."""
    taken = statement(None, medicationReference={"display": "Apixaban 5 MG"}, started=4)
    card = cards(request_with(taken, others=(condition(DVT, onset=5),)))["urgent-care"]
    assert card["indicator"] == "warning"


@pytest.mark.parametrize("status", ["intended", "on-hold", "not-taken", "stopped"])
def test_anticoagulant_not_being_taken_leaves_the_dvt_critical(status):
    """An anticoagulant the patient is not taking now does not treat the DVT."""
    taken = statement(
        None, status=status, medicationReference={"display": "Apixaban 5 MG"}, started=4
    )
    card = cards(request_with(taken, others=(condition(DVT, onset=5),)))["urgent-care"]
    assert card["indicator"] == "critical"


# --------------------------------------------------------------------------- prefetch and fetch


@pytest.fixture
def http_server():
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture(scope="module")
def fetching_service():
    """The service with its real FHIR client (requests over loopback HTTP)."""
    settings = Settings.from_env({}, today="2026-11-24", allow_http_fhir=True, fhir_timeout=10)
    service = CdsService(settings)
    yield service
    service.fetcher.close()


def with_server(request: dict, server: FhirServer) -> dict:
    request = copy.deepcopy(request)
    request["fhirServer"] = server.base
    request["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "leg-cramp-referral",
    }
    return request


def test_discovery_lists_active_statements_with_their_medications(fetching_service):
    service = fetching_service
    template = service.discovery()["services"][0]["prefetch"]["medicationstatements"]
    assert template == (
        "MedicationStatement?patient={{context.patientId}}&status=active"
        "&_include=MedicationStatement:medication"
    )
    assert not next(k for k in service.keys if k.name == "medicationstatements").required


def test_missing_key_is_fetched_with_bundled_medications(http_server, fetching_service):
    taken = statement(None, medicationReference={"reference": "Medication/med1"})
    stopped = statement(SIMVASTATIN_40, status="stopped", rid="ms2")
    server = FhirServer(
        http_server, [taken, stopped, bundled_medication(ATORVASTATIN_20)], token=TOKEN
    )
    request = hook_request(*normal_workup())
    assert "medicationstatements" not in request["prefetch"]
    response = fetching_service.evaluate(with_server(request, server)).response
    review = [c for c in response["cards"] if route_of(c) == "medication-review"]
    assert review, "the fetched statement's medicine is reviewed"
    [line] = evidence_lines(review[0])
    assert "atorvastatin 20 MG Oral Tablet: Statin, active, recorded as taken" in line
    [asked] = server.requests
    assert asked["path"] == "/fhir/MedicationStatement"
    assert asked["args"] == {
        "patient": [PATIENT_ID],
        "status": ["active"],
        "_include": ["MedicationStatement:medication"],
    }


def test_failed_optional_key_keeps_the_other_cards(http_server, fetching_service, caplog):
    server = FhirServer(http_server, [], token=TOKEN)
    server.faults["MedicationStatement"] = lambda _request: fhir_response(
        outcome("exception", "statements are unavailable"), 500
    )
    order = medication(*ATORVASTATIN_10, authored=60)
    request = hook_request(order, condition(DVT, onset=2), *normal_workup())
    with caplog.at_level(logging.WARNING, logger="cds_service.protocol.prefetch"):
        response = fetching_service.evaluate(with_server(request, server)).response
    routes = {route_of(c) for c in response["cards"]}
    assert {"urgent-care", "medication-review"} <= routes
    assert any("optional prefetch key medicationstatements" in m for m in caplog.messages)
    assert [r["path"] for r in server.requests] == ["/fhir/MedicationStatement"]


def test_no_key_and_no_server_still_answers():
    """A client that knows nothing of statements (older discovery, no fhirServer)."""
    request = hook_request(medication(*ATORVASTATIN_10, authored=60), *normal_workup())
    assert "medication-review" in cards(request)


def test_prefetched_statement_is_not_fetched_again(http_server, fetching_service):
    server = FhirServer(http_server, [], token=TOKEN)
    response = fetching_service.evaluate(with_server(request_with(statement()), server))
    assert "medication-review" in {route_of(c) for c in response.response["cards"]}
    assert server.requests == []


def test_the_gate_still_applies_to_statements():
    """No leg-cramp problem, no cards, whatever the patient takes."""
    request = hook_request(*normal_workup(), gate=False)
    request["prefetch"]["medicationstatements"] = searchset([statement()])
    assert evaluate(request)["cards"] == []


# ------------------------------------------------------------------- the statement's period


@pytest.mark.parametrize(
    "end, reviewed",
    [(day(10), False), ("2026-09", False), (day(-30), True), ("not a date", True)],
)
def test_a_statement_whose_period_ended_is_no_longer_taken(end, reviewed):
    """ "active" is true as of when it was asserted: a period that ended before today means
    the medicine is no longer taken (an end that cannot be read ends nothing)."""
    taken = statement(effectivePeriod={"start": day(60), "end": end})
    assert ("medication-review" in cards(request_with(taken))) is reviewed
