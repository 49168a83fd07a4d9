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

Second review (session 10):
- the CLTI card's best medical therapy is one medicine a step: no statin advice beside
  rhabdomyolysis or a CK of 1000 or more (the same-day card stops the statin), "keep the
  statin" declared to the one plan, no "start an antiplatelet" on an anticoagulant;
- CLTI coded over 6 months ago is its own card: "check the leg now", a referral the clinician
  marks urgent, no claudication steps;
- the gangrene card's caveat speaks to the clinician, not of the rules;
- bypass-graft codes: gangrene same day, rest pain and ulcer a limb at risk, claudication PAD.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import simple_icd_10_cm as icd
import vignettes as v
import yaml
from routes_helpers import next_steps as steps
from routes_helpers import referral_resources
from routes_helpers import vignette_cards as cards

VALUE_SETS = (
    Path(__file__).resolve().parents[1] / "cards" / "valuesets" / "peripheral-vascular.yaml"
)
VASCULAR_REFERRAL = "307777008"


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
    assert "Best medical therapy alongside: no smoking" in text
    assert "Start or continue an antiplatelet" in text
    # Near miss: claudication alone keeps the PAD steps.
    near = steps(cards(v.claudication_without_abi)["vascular"])
    assert "Confirm with an ABI" in near and "supervised exercise" in near
    assert "Best medical therapy" not in near


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
    assert card["summary"].startswith("Limb ischemia coded over 6 months ago, check the leg now:")
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


# ------------------------------------------------------- second review: statin, antiplatelet
def vascular_steps(build) -> str:
    return steps(cards(build)["vascular"])


def test_no_statin_advice_on_the_clti_card_beside_rhabdomyolysis():
    """The reviewer's patient (CLTI, simvastatin, CK 2480 yesterday): the same-day card stops
    the statin and no other card says to keep or start one."""
    found = cards(v.clti_on_simvastatin_with_ck_2480)
    assert "Stop the statin meanwhile" in steps(found["urgent-care"])
    assert "statin" not in steps(found["vascular"]).lower()
    others = [
        steps(c) for code, c in found.items() if code != "urgent-care" and "**Next" in c["detail"]
    ]
    assert not any(
        "keep the statin" in t.lower() or "start a high-intensity" in t.lower() for t in others
    )
    # Not on a statin, the same CK: no "start a statin" either.
    assert "statin" not in vascular_steps(v.clti_without_statin_with_ck_2480).lower()


def test_the_clti_card_keeps_a_statin_taken_and_starts_one_otherwise():
    """Near misses: no muscle injury."""
    on = cards(v.clti_on_simvastatin)["vascular"]
    assert "- Keep the statin, high-intensity if tolerated." in steps(on)
    assert "simvastatin" in on["detail"].split("**Also on record**")[1]
    assert "start a high-intensity" not in steps(on)
    off = vascular_steps(v.rest_pain_coded_20_days_ago)
    assert "Not on a statin: start a high-intensity one." in off
    assert "Keep the statin" not in off


def test_the_keep_step_is_declared_to_the_one_plan():
    """Belt and braces: "keep the statin" is declared to the one plan (drugs: continue), so
    even chosen beside the same-day card's "stop the statin" the plan leaves it out and
    points to that card; the CLTI card's own `unless` keeps it from being chosen at all."""
    from datetime import date

    from corpus import render_request

    from cds_service.engine.plan import compose

    patient = render_request("ck", v.clti_on_simvastatin_with_ck_2480(), date(2026, 11, 24))
    vascular = next(r for r in patient.results if r.route.code == "vascular")
    [keep] = [
        s for b in vascular.route.content.values() for s in b.steps if s.text.startswith("Keep")
    ]
    assert keep.drugs == (("statin", "continue"),)
    assert {"ck-very-high", "rhabdomyolysis-new"} <= set(keep.unless)
    assert keep not in (vascular.chosen or [])  # the unless held
    vascular.chosen = [*(vascular.chosen or []), keep]  # as if it had not
    shared_file = VALUE_SETS.parents[1] / "shared" / "criteria.yaml"
    shared = frozenset(c["id"] for c in yaml.safe_load(shared_file.read_text())["criteria"])
    compose(patient.results, shared)
    assert keep not in (vascular.steps or [])
    assert "Urgent care (same-day assessment)" in vascular.superseded_by


def test_no_antiplatelet_started_on_an_anticoagulant():
    text = vascular_steps(v.clti_on_apixaban)
    assert "Start or continue an antiplatelet" not in text
    assert (
        "On an anticoagulant (listed): ask the vascular surgeon before adding an antiplatelet."
        in text
    )
    assert "apixaban" in cards(v.clti_on_apixaban)["vascular"]["detail"]
    near = vascular_steps(v.rest_pain_coded_20_days_ago)
    assert "Start or continue an antiplatelet (aspirin or clopidogrel)." in near
    assert "On an anticoagulant" not in near


def test_the_longest_clti_card_keeps_its_medicine_steps_within_the_budget():
    card = cards(v.undated_clti_on_simvastatin_and_apixaban)["vascular"]
    assert len(card["detail"]) <= 900
    text = steps(card)
    assert "Keep the statin" in text and "On an anticoagulant (listed)" in text
    assert "More next steps" not in text


# ------------------------------------------------------- second review: CLTI coded earlier
@pytest.mark.parametrize(
    "build",
    [v.rest_pain_coded_400_days_ago, v.gangrene_coded_400_days_ago, v.old_clti_with_claudication],
)
def test_clti_coded_earlier_is_its_own_card_with_no_claudication_steps(build):
    card = cards(build)["vascular"]
    assert card["summary"].startswith("Limb ischemia coded over 6 months ago, check the leg now: ")
    assert len(card["summary"]) < 100
    assert [s["label"] for s in card["suggestions"]] == [
        "Refer to vascular surgery (mark urgent if rest pain or a wound)"
    ]
    text = steps(card)
    assert "supervised exercise" not in text and "claudication limits life" not in text
    assert "Peripheral artery disease" not in card["summary"]


def test_claudication_alone_keeps_the_pad_card():
    """Near miss: no CLTI code at all."""
    card = cards(v.claudication_without_abi)["vascular"]
    assert card["summary"].startswith("Peripheral artery disease: ")
    assert [s["label"] for s in card["suggestions"]] == ["Refer to vascular surgery"]
    assert "supervised exercise" in steps(card) and "claudication limits life" in steps(card)


# ------------------------------------------------------- second review: gangrene caveat
def test_the_gangrene_caveat_speaks_to_the_clinician_not_of_the_rules():
    detail = cards(v.diabetic_gangrene)["urgent-care"]["detail"]
    assert (
        "If this gangrene is old and healed (amputation, revascularization), update the "
        "problem list; new or spreading tissue loss is an emergency." in detail
    )
    assert "asked about on the vascular card" not in detail


# ------------------------------------------------------- second review: bypass-graft codes
GRAFTS = (3, 4, 5, 6, 7)  # I70.3x-I70.7x: the five kinds of bypass graft(s)


def _icd_set(name: str) -> set[str]:
    sets = yaml.safe_load(VALUE_SETS.read_text())["value_sets"]
    return {e["code"] for e in sets[name] if e["system"] == "icd10cm"}


def test_every_bypass_graft_code_of_a_limb_at_risk_is_in_its_set():
    gangrene, clti, pad = _icd_set("clti-gangrene"), _icd_set("clti"), _icd_set("pad")
    for g in GRAFTS:
        assert f"I70.{g}6" in gangrene
        assert {f"I70.{g}2", f"I70.{g}3", f"I70.{g}4"} <= clti
        assert f"I70.{g}1" in pad
        assert f"I70.{g}5" not in clti  # other extremity, not the leg
        for code, words in [
            (f"I70.{g}2", "rest pain"),
            (f"I70.{g}3", "right leg with ulceration"),
            (f"I70.{g}4", "left leg with ulceration"),
            (f"I70.{g}1", "claudication"),
        ]:
            leaves = icd.get_descendants(code)
            assert leaves and all(words in icd.get_description(c) for c in leaves), code


def test_bypass_graft_gangrene_is_same_day_and_rest_pain_or_ulcer_urgent():
    found = cards(v.bypass_graft_gangrene)
    assert found["urgent-care"]["indicator"] == "critical" and "vascular" not in found
    for build in (v.bypass_graft_rest_pain, v.bypass_graft_ulcer_right_leg):
        found = cards(build)
        assert "urgent-care" not in found
        assert found["vascular"]["summary"].startswith("Urgent vascular referral, limb at risk")
        assert referral_codes(found) == [(VASCULAR_REFERRAL, "urgent")]
    # Near miss: a graft with claudication is PAD, a routine referral.
    found = cards(v.bypass_graft_claudication)
    assert found["vascular"]["summary"].startswith("Peripheral artery disease")
    assert referral_codes(found) == [(VASCULAR_REFERRAL, "routine")]


def test_no_vignette_is_told_to_stop_and_to_keep_or_start_a_statin():
    """The one-plan words check for the statin, over every vignette: "stop the statin" on one
    card never stands beside "keep", "continue" or "start" a statin on another."""
    import re

    from corpus import vignette_patients

    keep_or_start = re.compile(
        r"\b(keep|continue)\b[^.]*\bstatin\b|\bstart\b[^.]*\bstatin\b|\bnot on a statin\b", re.I
    )
    checked = 0
    for patient in vignette_patients():
        words = [c["detail"].split("**Next step**")[-1] for c in patient.cards]
        if any(re.search(r"\bstop the statin\b", w, re.I) for w in words):
            checked += 1
            assert not any(keep_or_start.search(w) for w in words), (patient.label, words)
    assert checked >= 2  # statin_with_ck_2480 and the CLTI patient
