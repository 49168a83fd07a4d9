"""A diabetic polyneuropathy with leg cramps gets one card (route-guide §2.2: "put both
suggestions on one card; do not make two cards"): with poorly controlled diabetes the
endocrinology card, which also asks for the neurology referral; with a controlled one, a
neurology card for information; with no usable HbA1c, a neurology warning, and the HbA1c is
asked for once in the plan. Vignettes in tests/vignettes.py (the one-plan corpus runs them)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import vignettes as v
from corpus import render_request
from routes_helpers import cards_of, condition, normal_workup, observation, route_of

from cds_service.engine.loader import load

CARDS = Path(__file__).resolve().parents[1] / "cards"
TODAY = date(2026, 11, 24)
ENDOCRINOLOGY_REFERRAL = "306278007"


def rendered(build):
    return render_request(build.__name__, build(), TODAY)


def by_route(build) -> dict[str, dict]:
    return {route_of(card): card for card in rendered(build).cards}


def steps(card: dict) -> str:
    return card["detail"].split("**Next step**")[1].split("**Caveats**")[0]


def fired(card: dict) -> str:
    return next(link["url"] for link in card["links"] if "/explain/" in link["url"])


@pytest.mark.parametrize(
    "hba1c",
    [("4548-4", 10.2, "%"), ("59261-8", 88, "mmol/mol")],
    ids=["percent", "mmol-mol"],
)
def test_poor_control_makes_one_endocrinology_card_that_points_to_neurology(hba1c):
    code, value, unit = hba1c
    found = cards_of(
        condition("E11.42", onset=100), observation(code, value, unit, 30), *normal_workup()
    )
    assert list(found) == ["endocrinology"]
    card = found["endocrinology"]
    assert card["summary"].startswith("Refer to endocrinology and neurology: ")
    assert len(card["summary"]) < 100
    told = steps(card)
    # The endocrinology referral leads, the neurology one (EMG/NCS) follows, on this card.
    assert told.index("Refer to endocrinology") < told.index("neurology referral")
    assert "nerve conduction studies and EMG" in told
    assert "diabetic polyneuropathy" in card["detail"]
    assert "HbA1c 10.2 %" in card["detail"]
    assert "diabetic-polyneuropathy-poor-control" in fired(card)
    referrals = [
        a["resource"]["code"]["coding"][0]["code"]
        for s in card["suggestions"]
        for a in s["actions"]
    ]
    assert referrals == [ENDOCRINOLOGY_REFERRAL]


def test_the_vignette_with_hba1c_10_2_has_no_neurology_card():
    found = by_route(v.polyneuropathy_with_hba1c_10_2)
    assert set(found) == {"endocrinology"}
    assert "neurology referral" in steps(found["endocrinology"])


def test_coded_uncontrolled_diabetes_without_hba1c_also_makes_one_card():
    found = by_route(v.polyneuropathy_coded_uncontrolled_without_hba1c)
    assert "neurology" not in found
    assert "neurology referral" in steps(found["endocrinology"])
    # The missing HbA1c is asked for once, by the workup card's order.
    assert "Order HbA1c" in steps(found["primary-care-workup"])


def test_controlled_diabetes_gets_neurology_information_only_with_the_hba1c_dated():
    found = by_route(v.polyneuropathy_with_hba1c_7)
    assert list(found) == ["neurology"]
    card = found["neurology"]
    assert card["indicator"] == "info"
    assert card["summary"].startswith("Consider neurology: ")
    # How old the HbA1c it rests on is: its date, in the evidence and the summary.
    assert "- HbA1c 7 % on 2026-10-25 (LOINC 4548-4)" in card["detail"]
    assert "HbA1c 7 % on 2026-10-25" in card["summary"]


def test_no_hba1c_gives_a_neurology_warning_and_the_hba1c_is_asked_once():
    patient = rendered(v.polyneuropathy_without_hba1c)
    found = {route_of(card): card for card in patient.cards}
    assert set(found) == {"neurology", "primary-care-workup"}
    neurology = found["neurology"]
    assert neurology["indicator"] == "warning"
    assert "no usable HbA1c in the last year" in steps(neurology)
    # The neurology card's own HbA1c step gives way to the workup card's order of it.
    assert "Check HbA1c" not in steps(neurology)
    assert "See the Primary care workup card" in steps(neurology)
    asking = [
        r.route.code
        for r in patient.results
        if any("hba1c" in s.tests for s in r.steps or ())
        or any(f.order and "hba1c" in getattr(f.evidence, "concepts", ()) for f in r.facts)
    ]
    assert asking == ["primary-care-workup"]


def test_with_no_other_card_asking_the_neurology_card_asks_for_the_hba1c():
    """An HbA1c with no unit cannot be read: no workup card orders one, so neurology asks,
    and says which result it could not read."""
    unreadable = observation("4548-4", 10.2, None, 30)
    found = cards_of(condition("E11.42", onset=100), unreadable, *normal_workup())
    assert list(found) == ["neurology"]
    card = found["neurology"]
    assert "Check HbA1c" in steps(card)
    assert "cannot be read" in card["detail"].split("**Also on record**")[1]


def test_near_miss_poor_control_without_neuropathy_has_no_neurology_step():
    found = by_route(v.diabetes_with_hba1c_10_2_no_neuropathy)
    assert list(found) == ["endocrinology"]
    card = found["endocrinology"]
    assert "neurology" not in card["summary"] and "neurology" not in steps(card)
    assert "diabetic-polyneuropathy-poor-control" not in fired(card)


def test_another_neurology_finding_shows_the_polyneuropathy_as_context():
    found = cards_of(
        condition("E11.42", onset=100),
        condition("R25.3", onset=10),
        observation("4548-4", 10.2, "%", 30),
        *normal_workup(),
    )
    also = found["neurology"]["detail"].split("**Also on record**")[1]
    assert "diabetic polyneuropathy" in also.split("**Next step**")[0]


def test_the_concepts_both_routes_read_are_defined_once_in_cards_shared():
    ruleset = load(CARDS)
    shared = {"hba1c-above-9", "diabetic-polyneuropathy-new", "diabetes-uncontrolled-coded"}
    assert shared <= set(ruleset.shared_criteria)
    routes = {route.code: route for route in ruleset.routes}
    for code in ("endocrinology", "neurology"):
        assert shared <= routes[code].shared, code
