"""Open referrals already on record (issue 21): recognised by a referral code for the same
specialist, or by the specialty named in a locally coded referral's text or display, so the
card says a referral exists instead of suggesting a duplicate."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from cds_service.config import Settings
from cds_service.engine import loader
from cds_service.engine.model import RuleError
from cds_service.engine.referrals import (
    NAME_LIMIT,
    names_referral,
    request_name,
    words_for,
    words_pattern,
)
from cds_service.service import CdsService

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

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "cards"
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
    assert card["detail"].startswith("**Evidence**\n- ")  # the evidence stays whole
    assert "An open referral for this already exists (" in card["detail"]
    assert "ordered " in card["detail"].split("already exists (")[1].split(")")[0]


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
        local_referral("Renal clinic referral"),
        local_referral("Kidney clinic referral"),
        local_referral("Referral to nephrology"),
        local_referral("Nephrology consult"),
        local_referral("Urgent referral to nephrology"),
        local_referral("Emergency referral to nephrology"),  # a priority, not the ED
        local_referral("Nephrology", display="Outpatient referral"),
        local_referral("Ambulatory referral to Nephrology", status="on-hold"),
    ],
    ids=[
        "text",
        "upper-case",
        "display",
        "renal-clinic",
        "renal-clinic-first",
        "kidney-clinic",
        "referral-to-nephrology",
        "nephrology-consult",
        "urgent",
        "emergency-priority",
        "split",
        "on-hold",
    ],
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


def test_the_card_says_which_request_it_took_for_the_open_referral():
    card = nephrology_card(local_referral("Ambulatory  referral to\nNephrology"))
    assert (
        f'An open referral for this already exists ("Ambulatory referral to Nephrology", '
        f"ordered {day(12)}): no new referral is offered." in card["detail"]
    )


def test_a_request_known_by_its_code_alone_is_named_by_its_display_or_not_at_all():
    coded = service_request("306286007")  # no text, no display
    card = nephrology_card(coded)
    assert f"An open referral for this already exists (ordered {day(5)}): no" in card["detail"]
    coded["code"]["coding"][0]["display"] = "Referral to nephrologist (procedure)"
    card = nephrology_card(coded)
    assert (
        f'already exists ("Referral to nephrologist (procedure)", ordered {day(5)})'
        in card["detail"]
    )
    del coded["authoredOn"]
    card = nephrology_card(coded)
    assert 'already exists ("Referral to nephrologist (procedure)"): no' in card["detail"]


def test_a_long_request_name_is_cut_to_the_limit():
    long = "Ambulatory referral to Nephrology " + "for chronic kidney disease follow-up " * 4
    name = request_name(local_referral(long))
    assert name is not None and len(name) == NAME_LIMIT and name.endswith("…")
    assert name.startswith("Ambulatory referral to Nephrology for")
    assert request_name(local_referral(None, display="Nephrology")) == "Nephrology"
    assert request_name(local_referral("  ", display="Nephrology")) == "Nephrology"
    assert request_name(local_referral(None)) is None
    card = nephrology_card(local_referral(long))
    assert f'("{name}", ordered' in card["detail"]


def test_the_reviewers_ckd_stage_4_example_is_still_referred_despite_other_requests():
    """The CKD stage 4 example with a urology referral for kidney stones, or a renal
    ultrasound under the category "Referral", open: the nephrology card still offers its
    referral; with a nephrology one it does not."""
    request = json.loads((ROOT / "fhir_examples" / "nephrology-ckd-stage-4.json").read_text())
    service = CdsService(Settings.from_env({}, today="2026-11-24"), fetcher=lambda *a: {})
    urology = local_referral("Ambulatory referral to Urology - kidney stones")
    ultrasound = local_referral("Renal ultrasound")
    ultrasound["category"] = [{"text": "Referral"}]
    nephrology = local_referral("Nephrology consult")

    def nephrology_card_with(*resources: dict) -> dict:
        sent = json.loads(json.dumps(request))
        patient = sent["prefetch"]["patient"]["id"]
        entries = []
        for resource in resources:
            resource = {**resource, "subject": {"reference": f"Patient/{patient}"}}
            resource["authoredOn"] = "2026-11-20"
            entries.append({"resource": resource})
        sent["prefetch"]["servicerequests"] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": entries,
        }
        cards = service.evaluate(sent).response["cards"]
        (card,) = [c for c in cards if c["source"]["topic"]["code"] == "nephrology"]
        return card

    for other in (urology, ultrasound):
        card = nephrology_card_with(other)
        assert referral_resources(card) and "already exists" not in card["detail"]
    card = nephrology_card_with(urology, nephrology)
    assert not referral_resources(card)
    assert 'already exists ("Nephrology consult", ordered 2026-11-20)' in card["detail"]


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
        local_referral("Urology referral - kidney stones"),  # another specialty, same organ
        local_referral("Ambulatory referral to Urology - kidney stones"),
        local_referral("Kidney consult"),  # the organ alone names no specialist
        local_referral("Renal referral"),
        local_referral("Referral to nephrology - renal ultrasound first"),  # in doubt: offer
        local_referral("Referral to vascular surgery for renal artery stenosis"),
        local_referral("Referral to renal transplant surgery"),
        local_referral("Referral to renal stone clinic"),
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
        "urology-kidney-stones",
        "ambulatory-urology",
        "kidney-consult",
        "renal-referral",
        "nephrology-and-ultrasound",
        "vascular-renal-artery",
        "transplant-surgery",
        "stone-clinic",
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
    for route in routes:
        assert route.referral is not None
        resource = local_referral(None, display=route.referral.code.display)
        for other in routes:
            assert other.referral is not None
            words = words_for(other.referral, ruleset.referral_words)
            assert names_referral(resource, words) is (other is route), (route.code, other.code)


def test_every_route_refuses_a_referral_that_also_names_another_specialty():
    """Each route's own display with another route's display, or with a specialty no route
    refers to, appended: recognised by no route (a duplicate is offered)."""
    ruleset = loader.load(CARDS)
    routes = routes_with_referrals()
    others = [str(w) for w in ruleset.spec["referral_other_specialties"]]
    assert {"urology", "cardiology", "radiology", "ultrasound", "imaging"} <= set(others)
    for route in routes:
        assert route.referral is not None
        words = words_for(route.referral, ruleset.referral_words)
        named = [o.referral.code.display for o in routes if o is not route and o.referral]
        for extra in named + others:
            resource = local_referral(f"{route.referral.code.display} - {extra}")
            assert not names_referral(resource, words), (route.code, extra)


@pytest.mark.parametrize(
    "file, old, new, named",
    [
        (
            "vascular.yaml",
            "words: [vascular surgery,",
            "words: [Nephrology, vascular surgery,",
            "nephrology.yaml",
        ),
        (
            "common.yaml",
            "  - urology\n",
            "  - urology\n  - renal clinic\n",
            "referral_other_specialties",
        ),
    ],
    ids=["two-routes", "route-and-common"],
)
def test_check_rules_refuses_a_word_naming_two_specialties(tmp_path, file, old, new, named):
    cards = tmp_path / "cards"
    shutil.copytree(CARDS, cards)
    path = cards / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(RuleError) as raised:
        loader.load(cards)
    message = str(raised.value)
    assert "also names another specialty" in message and named in message


def test_no_specialty_word_belongs_to_two_routes_or_to_the_other_specialties():
    ruleset = loader.load(CARDS)
    others = {str(w).casefold() for w in ruleset.spec["referral_other_specialties"]}
    seen: dict[str, str] = {}
    for route in routes_with_referrals():
        assert route.referral is not None
        for word in route.referral.words:
            key = word.casefold()
            assert key not in others, (route.code, word)
            assert seen.setdefault(key, route.code) == route.code, (route.code, word)
            assert word.casefold() not in {w.casefold() for w in route.referral.elsewhere}


@pytest.mark.parametrize(
    "route, text",
    [
        ("nephrology", "Kidney stones"),
        ("nephrology", "Renal"),
        ("endocrinology", "Endocrine panel"),
        ("neurology", "EMG"),
        ("neurology", "Nerve conduction study"),
        ("orthopedics", "Orthopedic shoes"),
        ("vascular", "Endovascular repair"),
        ("urgent-care", "Emergency"),
    ],
)
def test_organ_test_and_priority_words_alone_name_no_specialist(route, text):
    """Each route's words name the specialist or service, never the organ, a test or a
    priority: such a request under the category "Referral" is not the route's referral."""
    ruleset = loader.load(CARDS)
    (found,) = [r for r in routes_with_referrals() if r.code == route]
    assert found.referral is not None
    resource = local_referral(f"{text} referral")
    resource["category"] = [{"text": "Referral"}]
    assert not names_referral(resource, words_for(found.referral, ruleset.referral_words))


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
