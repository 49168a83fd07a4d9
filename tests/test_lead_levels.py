"""Blood lead tiers (clinical review, session 11): an adult blood lead of 80 ug/dL or more in
the last 90 days needs urgent evaluation (Kosnett et al. 2007, EHP 115:463), so it gets the
same-day card even when the result is 31-90 days old, and the workup's "prompt evaluation"
rule stands aside for it. 40-79 ug/dL 31-90 days old stays a prompt evaluation; children keep
the CDC childhood values (no child emergency level: not verified for this service)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cds_service.engine import loader
from cds_service.engine.facts import Threshold

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vignettes as v  # noqa: E402
from routes_helpers import (  # noqa: E402
    cards_of,
    next_steps,
    normal_workup,
    observation,
    patient,
    referral_resources,
    vignette_cards,
)

CARDS = Path(__file__).resolve().parents[1] / "cards"
KOSNETT = "https://doi.org/10.1289/ehp.9784"
SAME_DAY = "Lead with leg cramps, same-day evaluation"


def _rules(card: dict) -> str:
    """The fired rule ids, as the card's "Why this card" link names them."""
    [why] = [link["url"] for link in card["links"] if "rules=" in link["url"]]
    return why.split("rules=")[1]


def _assert_same_day_lead_card(cards: dict, level: str) -> None:
    card = cards["urgent-care"]
    assert card["indicator"] == "critical"
    assert card["summary"].startswith(SAME_DAY) and level in card["summary"]
    assert "not necessarily the emergency department" in card["detail"]
    assert KOSNETT in {link["url"] for link in card["links"]}
    [referral] = referral_resources(card)
    assert referral["priority"] == "urgent"  # same-day, not the emergency department (stat)


# ------------------------------------------------------------------------------ firing


def test_an_adult_90_from_45_days_ago_gets_the_same_day_card_not_a_prompt_evaluation():
    cards = vignette_cards(v.lead_adult_90_45_days_ago)
    _assert_same_day_lead_card(cards, "Blood lead 90 µg/dL")
    assert "lead-80-plus-adult" in _rules(cards["urgent-care"])
    # One plan for one result: no workup card saying "prompt evaluation" beside it.
    workup = cards.get("primary-care-workup", {})
    assert "prompt evaluation" not in workup.get("summary", "") + workup.get("detail", "")
    assert "primary-care-workup" not in cards


@pytest.mark.parametrize(
    "result",
    [
        observation("5671-3", 80, "ug/dL", 31),  # the level exactly, just past 30 days
        observation("5671-3", 80, "ug/dL", 90),  # the last day of the window
        observation("10368-9", 4.0, "umol/L", 60),  # capillary, 82.9 ug/dL
    ],
    ids=["80 31 days ago", "80 90 days ago", "4.0 umol/L 60 days ago"],
)
def test_adult_80_or_more_within_90_days_is_same_day(result):
    cards = cards_of(result, *normal_workup())
    _assert_same_day_lead_card(cards, "Blood lead")
    assert "primary-care-workup" not in cards


def test_unknown_age_reads_the_adult_level():
    """With no birth date the adult values apply (urgent-care.yaml)."""
    who = {"resourceType": "Patient", "id": patient()["id"], "gender": "female"}
    cards = cards_of(observation("5671-3", 90, "ug/dL", 45), *normal_workup(), who=who)
    _assert_same_day_lead_card(cards, "Blood lead 90 µg/dL")


def test_the_old_level_on_the_card_is_repeated_not_ordered_as_missing():
    steps = next_steps(vignette_cards(v.lead_adult_90_45_days_ago)["urgent-care"])
    assert "Repeat the blood lead today" in steps and "Order a blood lead level" not in steps
    recent = next_steps(
        cards_of(observation("5671-3", 90, "ug/dL", 10), *normal_workup())["urgent-care"]
    )
    assert "blood lead" not in recent.lower()  # a level of 10 days ago is on the card


# --------------------------------------------------------------------------- near misses


def test_an_adult_79_from_45_days_ago_stays_a_prompt_evaluation():
    cards = vignette_cards(v.lead_adult_79_45_days_ago)
    assert "urgent-care" not in cards
    card = cards["primary-care-workup"]
    assert card["indicator"] == "warning"
    assert card["summary"].startswith("Raised blood lead, prompt evaluation")
    assert "prompt medical evaluation" in card["detail"] and "Kosnett 2007" in card["detail"]
    assert "lead-prompt-evaluation" in _rules(card)


def test_an_adult_90_from_100_days_ago_is_not_urgent():
    """Outside the 90-day window: the workup's elevated-lead warning (repeat the level)."""
    cards = vignette_cards(v.lead_adult_90_100_days_ago)
    assert "urgent-care" not in cards
    card = cards["primary-care-workup"]
    assert card["indicator"] == "warning"
    assert "lead-elevated" in _rules(card) and "repeat the blood lead" in card["detail"]


def test_a_15_year_old_with_90_from_45_days_ago_is_not_made_urgent_by_the_adult_level():
    """The 80 level is the adults' (Kosnett 2007); no child emergency level is configured,
    so the child's 45 level 31-90 days ago gives the workup's prompt-evaluation card."""
    cards = vignette_cards(v.lead_teen_90_45_days_ago)
    assert "urgent-care" not in cards
    card = cards["primary-care-workup"]
    assert card["indicator"] == "warning"
    assert card["summary"].startswith("Raised blood lead, prompt evaluation: Blood lead 90")
    assert "lead-prompt-evaluation" in _rules(card)


# ----------------------------------------------------------------------------- the rules


def test_the_urgent_adult_level_is_one_named_threshold_read_by_both_routes():
    ruleset = loader.load(CARDS)
    routes = {route.code: route for route in ruleset.routes}
    urgent = routes["urgent-care"].criteria["lead-80-plus-adult"]
    workup = routes["primary-care-workup"].criteria["lead-80-plus-adult"]
    for criterion in (urgent, workup):
        assert criterion.threshold_name == "lead-urgent-adult"
        assert criterion.threshold == Threshold(">=", 80, "ug/dL")
        assert (criterion.age_from, criterion.age_below) == (18, None)
        assert criterion.window is not None and criterion.window.days == 90
    assert urgent.fires and not workup.fires
    prompt = routes["primary-care-workup"].criteria["lead-prompt-evaluation"].spec
    assert prompt["unless"] == ["lead-urgent-level"]
    assert (
        "lead-80-plus-adult"
        in routes["primary-care-workup"].criteria["lead-urgent-level"].spec["of"]
    )


def test_the_prompt_evaluation_title_says_what_it_is():
    ruleset = loader.load(CARDS)
    routes = {route.code: route for route in ruleset.routes}
    title = routes["primary-care-workup"].criteria["lead-prompt-evaluation"].spec["title"]
    assert "below the urgent level" not in title
    assert "31-90 days old" in title and "40-79" in title and "child 45" in title


def test_no_child_emergency_lead_level_is_configured():
    """Route guidance gives >= 70 as a child emergency, not verified: not configured."""
    ruleset = loader.load(CARDS)
    lead = {n: t for n, t in ruleset.thresholds.items() if t.concept.name == "blood-lead"}
    assert [n for n, t in lead.items() if "below" in t.ages] == ["lead-high-child"]
    # As the 40 level: a laboratory's HH/AA flag for lead does not say "80 or more".
    assert lead["lead-urgent-adult"].critical_flags == ()
