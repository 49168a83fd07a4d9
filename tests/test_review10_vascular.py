"""Session-10 clinical review, vascular items: each fix as a vignette (tests/vignettes.py,
so the one-plan and card-text checks of tests/corpus.py run over them too) with its near miss.

- U3: the CLTI card is clean: no "confirm with an ABI", routine referral, supervised exercise
  or occlusion review beside the urgent referral; best medical therapy instead.
- U4: gangrene is a same-day (critical) card, and the vascular card stands aside for it (and
  for a new acute occlusion): one plan, one referral.
- M1: CLTI coded over 180 days ago asks about rest pain and wounds now instead of an urgent
  referral; an undated code counts as current (the safe side) and the card says so.
- W2: the urgent referral says "within days", and an ABI of 0.40 or less is the "severe
  ischemic range", not CLTI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import simple_icd_10_cm as icd
import vignettes as v
import yaml
from routes_helpers import evaluate, referral_resources

VALUE_SETS = (
    Path(__file__).resolve().parents[1] / "cards" / "valuesets" / "peripheral-vascular.yaml"
)
VASCULAR_REFERRAL = "307777008"


def cards(build) -> dict[str, dict]:
    return {c["source"]["topic"]["code"]: c for c in evaluate(build())["cards"]}


def steps(card: dict) -> str:
    detail = card["detail"]
    assert "**Next step**" in detail, detail
    return detail.split("**Next step**")[1].split("**Caveats**")[0]


def referral_codes(found: dict[str, dict]) -> list[tuple[str, str]]:
    """(code, priority) of every referral the patient's cards offer."""
    return [
        (r["code"]["coding"][0]["code"], r.get("priority", ""))
        for card in found.values()
        for r in referral_resources(card)
        if r.get("resourceType") == "ServiceRequest"
    ]


# --------------------------------------------------------------------------- U3
def test_clti_with_claudication_gets_no_abi_confirmation_exercise_or_routine_referral():
    text = steps(cards(v.clti_rest_pain_with_claudication)["vascular"])
    assert text.strip().startswith("- Urgent vascular surgery referral, within days")
    assert "Confirm with an ABI" not in text
    assert "supervised exercise" not in text
    assert "limits life" not in text
    assert "best medical therapy: start or continue an antiplatelet and a statin" in text
    # Near miss: claudication alone keeps the PAD steps.
    near = steps(cards(v.claudication_without_abi)["vascular"])
    assert "Confirm with an ABI" in near and "supervised exercise" in near
    assert "best medical therapy" not in near


def test_clti_with_an_older_occlusion_gets_no_second_referral_or_abi_request():
    text = steps(cards(v.clti_with_older_occlusion)["vascular"])
    assert text.strip().startswith("- Urgent vascular surgery referral")
    assert "known arterial occlusion" not in text
    assert "ABI and arterial Doppler" not in text
    near = steps(cards(v.older_occlusion_alone)["vascular"])
    assert "Refer to vascular surgery to review the known arterial occlusion" in near
    assert "ABI and arterial Doppler" in near


# --------------------------------------------------------------------------- U4
def test_gangrene_codes_are_real_icd10cm_gangrene_codes_and_only_in_the_gangrene_set():
    sets = yaml.safe_load(VALUE_SETS.read_text())["value_sets"]
    for entry in sets["clti-gangrene"]:
        code = entry["code"]
        assert icd.is_valid_item(code), code
        leaves = [code] if icd.is_leaf(code) else icd.get_descendants(code)
        assert leaves and all("gangrene" in icd.get_description(c) for c in leaves), code
    for entry in sets["clti"]:
        if entry["system"] == "icd10cm":
            assert "gangrene" not in icd.get_description(entry["code"]), entry["code"]


@pytest.mark.parametrize(
    "build", [v.diabetic_gangrene, v.gangrene_with_claudication_and_abi_035, v.gangrene_undated]
)
def test_gangrene_is_one_same_day_plan(build):
    found = cards(build)
    card = found["urgent-care"]
    assert card["indicator"] == "critical"
    assert "gangrene" in card["summary"].lower() or "I70.26" in card["summary"]
    assert "emergency department or the vascular surgeon on call today" in steps(card)
    # No within-days or routine vascular referral beside the same-day one.
    assert "vascular" not in found
    codes = referral_codes(found)
    assert VASCULAR_REFERRAL not in [code for code, _ in codes]
    assert ("306254002", "stat") in codes


def test_undated_gangrene_counts_and_the_card_says_the_date_is_missing():
    card = cards(v.gangrene_undated)["urgent-care"]
    assert "counted as recent, check when it began" in card["detail"]


def test_rest_pain_is_urgent_within_days_not_same_day():
    """Near miss of gangrene: rest pain stays the vascular card's urgent referral."""
    found = cards(v.rest_pain_coded_20_days_ago)
    assert "urgent-care" not in found
    card = found["vascular"]
    assert card["indicator"] == "warning"
    assert referral_codes(found).count((VASCULAR_REFERRAL, "urgent")) == 1


def test_vascular_card_stands_aside_for_a_new_acute_occlusion():
    found = cards(v.clti_with_acute_occlusion)
    assert "acute limb ischemia" in steps(found["urgent-care"])
    assert "vascular" not in found
    # Near miss: an occlusion over 14 days old beside CLTI leaves the urgent vascular card.
    near = cards(v.clti_with_older_occlusion)
    assert "urgent-care" not in near
    assert referral_codes(near) == [(VASCULAR_REFERRAL, "urgent")]


# --------------------------------------------------------------------------- M1
@pytest.mark.parametrize("build", [v.rest_pain_coded_400_days_ago, v.gangrene_coded_400_days_ago])
def test_clti_coded_over_180_days_ago_asks_about_symptoms_now(build):
    found = cards(build)
    assert "urgent-care" not in found
    card = found["vascular"]
    assert not card["summary"].startswith("Urgent")
    text = steps(card)
    assert text.strip().startswith("- Limb-threatening ischemia coded over 6 months ago: ask now")
    assert "urgent vascular referral within days" in text
    assert referral_codes({"vascular": card}) == [(VASCULAR_REFERRAL, "routine")]
    assert "306254002" not in [code for code, _ in referral_codes(found)]


@pytest.mark.parametrize(
    "build",
    [
        v.rest_pain_coded_20_days_ago,
        v.rest_pain_begun_400_days_ago_recorded_30,  # a recent recorded date counts
        v.rest_pain_undated,  # no date: current, the safe side
        v.old_clti_with_abi_035,  # an old code with an ABI in the severe range now
    ],
)
def test_current_clti_is_still_an_urgent_referral(build):
    found = cards(build)
    card = found["vascular"]
    assert card["summary"].startswith("Urgent vascular referral")
    assert "coded over 6 months ago" not in steps(card)
    assert referral_codes(found) == [(VASCULAR_REFERRAL, "urgent")]


def test_undated_clti_says_its_date_is_missing():
    card = cards(v.rest_pain_undated)["vascular"]
    assert "counted as recent, check when it began" in card["detail"]


# --------------------------------------------------------------------------- W2
def test_urgent_referral_has_a_timeframe_and_a_low_abi_is_the_severe_ischemic_range():
    text = steps(cards(v.abi_035_alone)["vascular"])
    assert "within days, not routine" in text
    assert "same day if gangrene, infection or rapid worsening" in text
    assert "ABI in the severe ischemic range (0.40 or less)" in text
    assert "ABI of 0.40 or less threaten" not in text
