"""Open referrals already on record (issue 21): recognised by a referral code for the same
specialist, or by the specialty named in a locally coded referral's text or display, so the
card says a referral exists instead of suggesting a duplicate."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cds_service.engine import loader
from cds_service.engine.referrals import names_referral, words_pattern

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routes_helpers import (  # noqa: E402
    PATIENT_ID,
    cards_of,
    condition,
    day,
    normal_workup,
    referral_resources,
    service_request,
)

CARDS = Path(__file__).resolve().parents[1] / "cards"
LOCAL = "urn:oid:1.2.840.114350.1.13.0.1.7.2.696580"  # an EHR's own procedure codes
CKD_4 = "N18.4"  # gives the nephrology card


def local_referral(text: str | None, *, display: str | None = None, status: str = "active") -> dict:
    """A ServiceRequest coded only in an EHR's own system, as many EHRs send referrals."""
    coding: dict = {"system": LOCAL, "code": "REF1234"}
    if display is not None:
        coding["display"] = display
    code: dict = {"coding": [coding]}
    if text is not None:
        code["text"] = text
    return {
        "resourceType": "ServiceRequest",
        "id": "local-referral",
        "status": status,
        "intent": "order",
        "code": code,
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "authoredOn": day(12),
    }


def nephrology_card(*resources: dict) -> dict:
    return cards_of(condition(CKD_4), *resources, *normal_workup())["nephrology"]


def assert_no_second_referral(card: dict) -> None:
    assert not referral_resources(card)
    assert "An open referral for this already exists (ordered" in card["detail"]


def assert_referral_offered(card: dict) -> None:
    assert referral_resources(card)
    assert "already exists" not in card["detail"]


# ----------------------------------------------------------------------------- firing


@pytest.mark.parametrize(
    "request_",
    [
        local_referral("Ambulatory referral to Nephrology"),
        local_referral("AMBULATORY REFERRAL TO NEPHROLOGY"),
        local_referral(None, display="Ambulatory referral to Nephrology"),
        local_referral("Referral to renal clinic"),
        local_referral("Kidney consult"),
        local_referral("Nephrology", display="Outpatient referral"),
        local_referral("Ambulatory referral to Nephrology", status="on-hold"),
    ],
    ids=["text", "upper-case", "display", "renal", "kidney-consult", "split", "on-hold"],
)
def test_a_locally_coded_open_referral_is_recognised_by_its_words(request_):
    assert_no_second_referral(nephrology_card(request_))


def test_the_referral_code_still_counts_and_so_do_other_codes_for_the_same_specialist():
    assert_no_second_referral(nephrology_card(service_request("306286007")))
    endocrinology = cards_of(condition("E05.90"), service_request("183530004"), *normal_workup())
    assert_no_second_referral(endocrinology["endocrinology"])  # referral to diabetologist


@pytest.mark.parametrize("system", ["http://snomed.info/sct", "urn:oid:2.16.840.1.113883.6.96"])
def test_the_referral_code_counts_in_any_coding_and_any_spelling_of_its_system(system):
    request_ = local_referral(None)  # a local coding first, no words at all
    request_["code"]["coding"].append({"system": system, "code": "306286007"})
    assert_no_second_referral(nephrology_card(request_))


def test_a_request_whose_category_says_referral_is_recognised_by_its_specialty():
    """A local order coded "Nephrology" under the category "Referral" (the category is
    decoded and read like the code's words)."""
    request_ = local_referral("Nephrology")
    request_["category"] = [{"coding": [{"system": LOCAL, "code": "REF"}], "text": "Referral"}]
    assert_no_second_referral(nephrology_card(request_))


def test_a_referral_category_does_not_make_another_specialty_a_nephrology_referral():
    request_ = local_referral("Neurology")  # near miss of the above
    request_["category"] = [{"text": "Referral"}]
    assert_referral_offered(nephrology_card(request_))


def test_neurology_recognises_its_own_locally_coded_referral():
    cards = cards_of(
        condition("G62.9"), local_referral("Ambulatory referral to Neurology"), *normal_workup()
    )
    assert_no_second_referral(cards["neurology"])


# ------------------------------------------------------------------------- near misses


@pytest.mark.parametrize(
    "request_",
    [
        local_referral("Ambulatory referral to Neurology"),  # another specialty
        local_referral("Referral to adrenal clinic"),  # "renal" inside a word
        local_referral("Renal ultrasound"),  # an order, not a referral
        local_referral("Kidney function panel"),
        local_referral("Ambulatory referral to Nephrology", status="completed"),
        local_referral("Ambulatory referral to Nephrology", status="revoked"),
        local_referral("Ambulatory referral to Nephrology", status="draft"),
        local_referral("Ambulatory referral to Nephrology", status="entered-in-error"),
        local_referral(None),
    ],
    ids=[
        "neurology",
        "adrenal",
        "ultrasound",
        "lab-panel",
        "completed",
        "revoked",
        "draft",
        "entered-in-error",
        "no-text",
    ],
)
def test_other_or_closed_requests_leave_the_referral_offered(request_):
    assert_referral_offered(nephrology_card(request_))


def test_a_referral_for_another_patient_does_not_count():
    other = local_referral("Ambulatory referral to Nephrology")
    other["subject"] = {"reference": "Patient/someone-else"}
    assert_referral_offered(nephrology_card(other))


# ---------------------------------------------------------------------- the rule data


def routes_with_referrals():
    return [r for r in loader.load(CARDS).routes if r.referral is not None]


def test_every_route_with_a_referral_recognises_its_own_referral_by_its_display_alone():
    """A referral carrying the route's own display under a local code is recognised, and by
    no other route: the words name one specialty each."""
    ruleset = loader.load(CARDS)
    routes = routes_with_referrals()
    assert len(routes) >= 7
    kind = words_pattern(ruleset.referral_words)
    for route in routes:
        assert route.referral is not None
        resource = local_referral(None, display=route.referral.code.display)
        for other in routes:
            assert other.referral is not None
            specialty = words_pattern(other.referral.words)
            assert names_referral(resource, specialty, kind) is (other is route), (
                route.code,
                other.code,
            )


@pytest.mark.parametrize(
    "words, text, expected",
    [
        (("vascular surgery",), "Referral to vascular\n surgery", True),
        (("vascular surgery",), "Referral to cardiovascular surgery", False),
        (("PM&R",), "Referral to PM&R clinic", True),
        (("A&E",), "Referral to A&E", True),
        (("renal",), "Renal", True),
        (("renal",), "Suprarenal", False),
    ],
)
def test_words_match_whole_words_in_any_case(words, text, expected):
    assert bool(words_pattern(words).search(text)) is expected
