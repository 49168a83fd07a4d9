"""Order-time checks (issue 23): the order-sign and order-select services compare the draft
orders, as an EHR sends them, with the advice the chart supports; each card fires, its near
miss stays silent, and a draft that already fits gets no card."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import orjson
import pytest
from card_text_checks import is_own_order_card, text_problems

from cds_service.config import Settings
from cds_service.protocol import hooks, services
from cds_service.protocol.fhir_json import decode_request
from cds_service.render.order_cards import ORDER_CHECK
from cds_service.service import CdsService

EXAMPLES = Path(__file__).resolve().parents[1] / "fhir_examples"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOCAL = "urn:oid:1.2.840.114350.1.13.0.1.7.2.696580"  # an EHR's own order codes
VASCULAR_CHART = "vascular-abi-0.72-claudication"
URGENT_CHART = "urgent-care-critical-potassium"


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> CdsService:
    settings = Settings.from_env({}, today="2026-11-24", data_dir=tmp_path_factory.mktemp("data"))
    return CdsService(settings, fetcher=lambda *a: {})


def order_request(chart: str, *drafts: dict, hook: str = "order-sign", selections=None) -> dict:
    """The chart of an example, with ``drafts`` as the EHR's draftOrders Bundle."""
    written = json.loads((EXAMPLES / f"{chart}.json").read_text())
    context = {"userId": "Practitioner/example", "patientId": written["context"]["patientId"]}
    if selections is not None:
        context["selections"] = selections
    context["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": d} for d in drafts],
    }
    return {
        "hook": hook,
        "hookInstance": "test-order",
        "context": context,
        "prefetch": copy.deepcopy(written["prefetch"]),
    }


def referral(rid: str, code: str, display: str, *, system: str = SNOMED, **extra) -> dict:
    resource = {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": {"reference": "Patient/p-routes"},
        "authoredOn": "2026-11-24",
    }
    return {**resource, **extra}


def medicine(rid: str, code: str, display: str, **extra) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code, "display": display}],
            "text": display,
        },
        "subject": {"reference": "Patient/p-routes"},
        "authoredOn": "2026-11-24",
        **extra,
    }


ORTHOPEDICS = referral("d1", "308481009", "Referral to orthopedic surgeon (procedure)")
VASCULAR = referral("d2", "307777008", "Referral to vascular surgeon (procedure)")
NEPHROLOGY = referral("d3", "306286007", "Referral to nephrologist (procedure)")
HCTZ = medicine("m1", "310798", "Hydrochlorothiazide 25 MG Oral Tablet")


def cards(service: CdsService, request: dict) -> list[dict]:
    """The cards, decoded as the HTTP layer does; each checked against the response schema."""
    response = service.evaluate(decode_request(orjson.dumps(request))).response
    hooks.validator("cds-response").validate(response)
    for card in response["cards"]:
        assert len(card["summary"]) < 100 and len(card["detail"]) <= 900
    return response["cards"]


def only(found: list[dict]) -> dict:
    assert len(found) == 1, [c["summary"] for c in found]
    return found[0]


def actions(card: dict) -> list[dict]:
    (suggestion,) = card["suggestions"]
    assert card["selectionBehavior"] == "at-most-one"
    return suggestion["actions"]


def set_observation(request: dict, loinc: str, value: float, when: str) -> dict:
    entries = request["prefetch"]["observations"]["entry"]
    for entry in entries:
        if entry["resource"]["code"]["coding"][0]["code"] == loinc:
            entry["resource"]["valueQuantity"]["value"] = value
            entry["resource"]["effectiveDateTime"] = when
            return request
    entries.append(
        {
            "resource": {
                "resourceType": "Observation",
                "id": f"added-{loinc}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
                "subject": {"reference": "Patient/p-routes"},
                "effectiveDateTime": when,
                "valueQuantity": {
                    "value": value,
                    "unit": "U/L" if loinc == "2157-6" else "mmol/L",
                    "system": "http://unitsofmeasure.org",
                    "code": "U/L" if loinc == "2157-6" else "mmol/L",
                },
            }
        }
    )
    return request


# --- (a) a referral to a specialty the evidence does not support, while it supports another


def test_orthopedics_drafted_with_a_low_abi_is_replaced_by_vascular(service):
    card = only(cards(service, order_request(VASCULAR_CHART, ORTHOPEDICS)))
    assert card["source"]["topic"]["code"] == "vascular"
    assert "Vascular surgery" in card["summary"] and "Orthopedic" in card["summary"]
    delete, create = actions(card)
    assert delete == {
        "type": "delete",
        "description": "Remove the draft order",
        "resourceId": "ServiceRequest/d1",
    }
    proposed = create["resource"]
    assert create["type"] == "create" and proposed["intent"] == "proposal"
    assert proposed["code"]["coding"][0]["code"] == "307777008"
    assert proposed["subject"] == {"reference": "Patient/p-routes"}


def test_a_locally_coded_proposal_is_read_by_its_text(service):
    local = referral(
        "d9", "REF123", "Ambulatory referral to orthopedic surgery", system=LOCAL, intent="proposal"
    )
    card = only(cards(service, order_request(VASCULAR_CHART, local)))
    assert card["source"]["topic"]["code"] == "vascular"
    assert actions(card)[0]["resourceId"] == "ServiceRequest/d9"


def test_the_drafted_specialty_the_evidence_supports_is_silent(service):
    assert cards(service, order_request(VASCULAR_CHART, VASCULAR)) == []


def test_no_other_specialty_supported_is_silent(service):
    """Near miss: without the low ABI and claudication nothing supports vascular either."""
    request = order_request(VASCULAR_CHART, ORTHOPEDICS)
    conditions = request["prefetch"]["conditions"]["entry"]
    request["prefetch"]["conditions"]["entry"] = conditions[:1]  # the cramps only
    request["prefetch"]["observations"]["entry"] = []
    assert cards(service, request) == []


def test_a_signed_or_active_request_is_no_draft(service):
    active = {**ORTHOPEDICS, "status": "active"}
    assert cards(service, order_request(VASCULAR_CHART, active)) == []


def test_no_leg_cramp_problem_no_card(service):
    request = order_request(VASCULAR_CHART, ORTHOPEDICS, HCTZ)
    request["prefetch"]["conditions"]["entry"] = request["prefetch"]["conditions"]["entry"][1:]
    assert cards(service, request) == []


# --- (b) a routine referral while an urgent red flag is on record


def test_a_routine_referral_with_a_critical_potassium_is_made_same_day(service):
    request = order_request(URGENT_CHART, NEPHROLOGY)
    card = only(cards(service, request))
    assert card["indicator"] == "critical"
    assert card["source"]["topic"]["code"] == "urgent-care"
    delete, create = actions(card)
    assert delete["resourceId"] == "ServiceRequest/d3"
    assert create["resource"]["priority"] == "stat"
    assert create["resource"]["code"] == NEPHROLOGY["code"]
    assert "id" not in create["resource"]
    # A stat specialist referral does not treat the red flag (clinical review): the card
    # asks for same-day assessment first, and says the referral does not replace it.
    assert card["summary"].startswith("Urgent red flag on record: same-day assessment")
    assert "emergency department or urgent care" in card["detail"]
    assert "does not replace it" in card["detail"]


def test_an_urgent_referral_is_not_asked_to_be_urgent(service):
    stat = {**NEPHROLOGY, "priority": "stat"}
    found = cards(service, order_request(URGENT_CHART, stat))
    assert not any(c["summary"].startswith("Urgent red flag") for c in found)


# --- (c) a duplicate of an open referral


def _with_open_vascular_referral(request: dict, status: str = "active") -> dict:
    open_one = {**VASCULAR, "id": "open1", "status": status, "authoredOn": "2026-11-10"}
    request["prefetch"]["servicerequests"]["entry"].append({"resource": open_one})
    return request


def test_a_duplicate_referral_by_text_is_removed(service):
    local = referral("d5", "REF-VASC", "Ambulatory referral to vascular surgery", system=LOCAL)
    request = _with_open_vascular_referral(order_request(VASCULAR_CHART, local))
    card = only(cards(service, request))
    assert card["source"]["topic"]["code"] == "duplicate-referral"
    assert actions(card) == [
        {
            "type": "delete",
            "description": "Remove the draft order",
            "resourceId": "ServiceRequest/d5",
        }
    ]
    assert "2026-11-10" in card["detail"]


def test_a_completed_referral_is_no_duplicate(service):
    request = _with_open_vascular_referral(order_request(VASCULAR_CHART, VASCULAR), "completed")
    assert cards(service, request) == []


# --- (d) a medicine linked to cramps, with the patient's own results


def test_a_thiazide_with_a_low_potassium(service):
    request = set_observation(order_request(URGENT_CHART, HCTZ), "2823-3", 3.1, "2026-11-17")
    card = only(cards(service, request))
    assert card["source"]["topic"]["code"] == "medication-review"
    assert card["indicator"] == "warning"
    assert "Potassium 3.1 mmol/L" in card["summary"]
    assert "ACE inhibitor" in card["detail"]  # the alternative the guideline gives
    assert "in pregnancy never an ACE inhibitor or ARB" in card["detail"]


def test_a_thiazide_with_a_low_magnesium(service):
    request = set_observation(order_request(URGENT_CHART, HCTZ), "2823-3", 4.1, "2026-11-17")
    set_observation(request, "2601-3", 0.6, "2026-11-17")
    card = only(cards(service, request))
    assert "Magnesium" in card["summary"]


def test_a_thiazide_with_normal_electrolytes_is_silent(service):
    """Near miss: potassium 3.6, just above the threshold: the label warning is enough."""
    request = set_observation(order_request(URGENT_CHART, HCTZ), "2823-3", 3.6, "2026-11-17")
    assert cards(service, request) == []


def test_a_statin_with_a_raised_ck(service):
    statin = medicine("m2", "617312", "atorvastatin 10 MG Oral Tablet [Lipitor]")
    request = set_observation(order_request(VASCULAR_CHART, statin), "2157-6", 1450, "2026-11-23")
    card = only(cards(service, request))
    assert card["source"]["topic"]["code"] == "medication-review"
    assert "CK" in card["summary"] or "kinase" in card["summary"].lower()
    # As urgent as the chart's own card for this CK: same-day assessment, not just a warning.
    assert card["indicator"] == "critical"
    assert "same-day" in card["detail"]


def test_an_urgent_order_card_is_suppressed_at_most_a_day(service):
    sign = services.find("leg-cramp-order-sign", service.services)
    key = service.stored_key(sign, "medication-review")
    assert key in service.urgent_routes


def test_a_statin_with_a_normal_ck_is_silent(service):
    statin = medicine("m2", "617312", "atorvastatin 10 MG Oral Tablet [Lipitor]")
    request = set_observation(order_request(VASCULAR_CHART, statin), "2157-6", 180, "2026-11-23")
    assert cards(service, request) == []


def test_an_active_medicine_is_the_chart_not_a_draft(service):
    active = {**HCTZ, "status": "active"}
    request = set_observation(order_request(URGENT_CHART, active), "2823-3", 3.1, "2026-11-17")
    assert cards(service, request) == []


# --- order-select: only the selected drafts


def test_order_select_reads_only_the_selections(service):
    kept = order_request(
        VASCULAR_CHART,
        ORTHOPEDICS,
        VASCULAR,
        hook="order-select",
        selections=["ServiceRequest/d1"],
    )
    assert only(cards(service, kept))["source"]["topic"]["code"] == "vascular"
    other = order_request(
        VASCULAR_CHART, ORTHOPEDICS, VASCULAR, hook="order-select", selections=["ServiceRequest/d2"]
    )
    assert cards(service, other) == []


def test_a_draft_as_the_cds_hooks_sandbox_sends_it(service):
    """Rx View: MedicationRequest "request-123", intent proposal, a SCD code with its name as
    text, a Bundle without a type, and the selection naming it."""
    written = json.loads(
        (EXAMPLES / "medication-review-order-select-statin-raised-ck.json").read_text()
    )
    assert "type" not in written["context"]["draftOrders"]
    card = only(cards(service, written))
    assert card["summary"].startswith("Atorvastatin 40 MG Oral Tablet drafted with Creatine")
    not_selected = copy.deepcopy(written)
    not_selected["context"]["selections"] = ["MedicationRequest/another"]
    assert cards(service, not_selected) == []


def test_the_urgent_check_comes_before_the_duplicate(service):
    """A routine nephrology draft repeating an open referral, with a critical potassium:
    the urgent card, never the duplicate's info card."""
    request = order_request(URGENT_CHART, NEPHROLOGY)
    open_one = {**NEPHROLOGY, "id": "open2", "status": "active", "authoredOn": "2026-11-10"}
    request["prefetch"]["servicerequests"]["entry"].append({"resource": open_one})
    card = only(cards(service, request))
    assert card["indicator"] == "critical" and card["source"]["topic"]["code"] == "urgent-care"


# --- each card's source is its own guideline


@pytest.mark.parametrize(
    ("example", "check_id"),
    [
        ("medication-review-order-sign-thiazide-low-potassium", "thiazide-with-low-electrolyte"),
        ("medication-review-order-select-statin-raised-ck", "statin-with-raised-ck"),
        ("duplicate-referral-order-sign-vascular", "duplicate-referral"),
    ],
)
def test_a_card_of_a_checks_own_topic_cites_the_checks_guideline(service, example, check_id):
    """Its source is the check's first link, and no source link when the check has none (a
    duplicate referral rests on no guideline); a referral card that follows a route's advice
    cites that route's rule (tests/card_text_checks.py, over every example)."""
    request = json.loads((EXAMPLES / f"{example}.json").read_text())
    card = only(cards(service, request))
    assert card["extension"] == {ORDER_CHECK: check_id}  # what the card is, not its text
    assert is_own_order_card(card)
    assert not is_own_order_card({k: v for k, v in card.items() if k != "extension"})
    checks = [c for rules in service.order_rules.values() for c in rules.checks]
    check = next(c for c in checks if c.id == check_id)
    expected = check.links[0].url if check.links else None
    assert card["source"].get("url") == expected
    if expected is not None:
        assert card["links"][0]["url"] == expected


def test_a_referral_card_that_follows_advice_is_not_an_own_order_card(service):
    request = json.loads((EXAMPLES / "vascular-order-sign-orthopedics-drafted.json").read_text())
    card = only(cards(service, request))
    assert card["extension"] == {ORDER_CHECK: "wrong-specialty"}
    assert not is_own_order_card(card)
    assert not text_problems([card])


# --- summaries composed to fit (cds_service/render/summary.py), never cut

PHYSIATRY = referral("d6", "306289000", "Referral to rehabilitation physician (procedure)")
# An RxNorm clinical drug name as long as real ones run (86 characters).
LONG_HCTZ = medicine(
    "m3",
    "310798",
    "24 HR metoprolol succinate 25 MG / hydrochlorothiazide 12.5 MG Extended Release Oral Tablet",
)


def _whole_words(summary: str, *sources: str) -> bool:
    """Every word of the summary is a whole word of its template or of a name it holds."""
    words = {w for source in sources for w in re.findall(r"[\w.]+", source)}
    return all(word in words for word in re.findall(r"[\w.]+", summary.replace("(+1 more)", "")))


def test_a_specialty_too_long_for_the_summary_gets_the_checks_short_summary(service):
    """Routine PM&R with a critical potassium: 107 characters in the long wording, so the
    check's short_summary, with the specialty whole (formerly cut to "Physical medicine and…")."""
    card = only(cards(service, order_request(URGENT_CHART, PHYSIATRY)))
    assert card["summary"] == (
        "Urgent red flag: same-day assessment, not a routine "
        "Physical medicine and rehabilitation referral"
    )


def test_two_long_specialties_keep_both_names(service):
    """Orthopedics drafted where the record supports PM&R: 102 characters with "replace the
    draft", so the short form naming both, whole."""
    request = order_request("physiatry-lumbar-radiculopathy", ORTHOPEDICS)
    card = only(cards(service, request))
    assert card["summary"] == (
        "Record supports Physical medicine and rehabilitation, not Orthopedic spine surgery"
    )


def test_a_long_drug_name_is_named_by_its_ingredient_and_results_counted(service):
    """An 86-character product name with two low results: the ingredient, the first result
    and a count of the rest, every word whole, no ellipsis."""
    request = set_observation(order_request(URGENT_CHART, LONG_HCTZ), "2823-3", 3.1, "2026-11-17")
    set_observation(request, "2601-3", 0.6, "2026-11-17")
    card = only(cards(service, request))
    summary = card["summary"]
    assert (
        summary == "hydrochlorothiazide drafted with Potassium 3.1 mmol/L on 2026-11-17 (+1 more)"
    )
    assert "…" not in summary and not text_problems([card])
    assert _whole_words(summary, "{medicine} drafted with", card["detail"])


def test_every_checks_last_summary_fits_the_longest_names(service):
    """The data keeps its promise: with the longest specialty titles a referral card can
    name, and a medicine and result named at any length (the record's words are unbounded),
    each check's summary composes under 100 characters from whole words."""
    from cds_service.render.summary import Named, compose

    rules = service.ruleset
    titles = [r.title for r in rules.routes if r.referral is not None]
    checks = {c.id: c for order in service.order_rules.values() for c in order.checks}
    for check in checks.values():
        if "{medicine}" in check.summary:
            assert check.short_summary and "{finding}" not in check.short_summary
            classifiers = [r.medications for r in rules.routes if r.medications is not None]
            specs = [s for m in classifiers for k, s in m.specs.items() if k in check.classes]
            for ingredient in [i["display"] for s in specs for i in s["ingredients"]]:
                slots = {"medicine": [Named("X" * 150, ingredient)], "finding": [Named("Y" * 150)]}
                summary = compose(check.summaries, slots)
                assert len(summary) < 100 and "XX" not in summary and "YY" not in summary
            continue
        for advised in titles:
            for drafted in titles:
                slots = {"advised": [Named(advised)], "drafted": [Named(drafted)]}
                summary = compose(check.summaries, slots)
                assert len(summary) < 100, (check.id, summary)
                assert _whole_words(summary, *check.summaries, advised, drafted)
