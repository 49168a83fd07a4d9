"""Review 10, kidney items: a dialysis or transplant patient is told what to tell the team
that already follows them, never offered a nephrology referral (route-guide §2.7); the
dialysis steps fit peritoneal dialysis too; the calcineurin-inhibitor step needs one on
record; one CRRT episode is not maintenance dialysis; an unstaged "chronic renal failure" is
not CKD stage 4-5; an eGFR is not evidence on a dialysis card and the dialysis unit, not the
workup card, has the labs. Each fix: a firing vignette and its near miss (tests/vignettes.py,
so the corpus checks run over them too)."""

from __future__ import annotations

import vignettes as v
from routes_helpers import next_steps as steps
from routes_helpers import referral_resources
from routes_helpers import vignette_cards as cards

NEPHROLOGY = "nephrology"
WORKUP = "primary-care-workup"


def evidence(card: dict) -> str:
    return card["detail"].split("**Next step**")[0]


# --- M2: dialysis


def test_a_dialysis_card_offers_no_referral_and_the_near_miss_does():
    card = cards(v.hemodialysis_without_labs)[NEPHROLOGY]
    assert card["summary"].startswith("Cramps on dialysis")
    assert referral_resources(card) == []
    near = cards(v.ckd4_with_egfr_8)[NEPHROLOGY]
    assert referral_resources(near)[0]["code"]["coding"][0]["code"] == "306286007"


def test_the_dialysis_step_fits_peritoneal_dialysis_and_names_carnitine_as_the_nephrologists():
    text = steps(cards(v.peritoneal_dialysis_with_potassium_31)[NEPHROLOGY])
    assert "on peritoneal dialysis fluid status and potassium" in text
    assert "the nephrologist may consider carnitine (weak evidence" in text
    assert "intradialytic" not in text  # a hemodialysis-only word


def test_a_low_potassium_on_dialysis_is_for_the_nephrologist_not_a_recheck_to_refer():
    found = cards(v.peritoneal_dialysis_with_potassium_31)
    text = steps(found[NEPHROLOGY])
    assert "Tell the nephrologist about the electrolyte result listed" in text
    assert "Potassium 3.1" in evidence(found[NEPHROLOGY])
    assert "KDIGO reason to refer" not in text
    assert WORKUP not in found  # not a primary-care potassium card beside it
    near = steps(cards(v.ckd3_with_one_high_potassium)[NEPHROLOGY])
    assert "Recheck the electrolyte" in near
    assert "Tell the nephrologist about the electrolyte result" not in near


def test_dialysis_labs_are_asked_of_the_dialysis_unit_only_when_none_are_recent():
    found = cards(v.hemodialysis_without_labs)
    for test in ("potassium", "calcium", "magnesium"):
        assert f"Ask the dialysis unit for the latest {test} from its monthly labs" in steps(
            found[NEPHROLOGY]
        )
    assert WORKUP not in found  # W1: no metabolic panel or magnesium order
    near = steps(cards(v.peritoneal_dialysis_with_potassium_31)[NEPHROLOGY])
    assert "latest potassium" not in near  # a potassium of 4 days ago is on the card


# --- M3: CRRT


def test_one_crrt_episode_is_not_maintenance_dialysis():
    assert NEPHROLOGY not in cards(v.crrt_for_aki_recovered)
    near = cards(v.hemodialysis_5_days_ago)[NEPHROLOGY]
    assert near["summary"].startswith("Cramps on dialysis")


# --- M4: kidney transplant


def test_a_transplant_card_says_tell_the_transplant_team_and_offers_no_referral():
    card = cards(v.transplant_on_tacrolimus)[NEPHROLOGY]
    assert card["summary"].startswith("Kidney transplant with cramps, tell the transplant team")
    assert not card["summary"].startswith("Refer")
    assert referral_resources(card) == []
    assert "Tell the transplant nephrology team" in steps(card)


def test_the_calcineurin_inhibitor_step_only_with_one_on_record():
    card = cards(v.transplant_on_tacrolimus)[NEPHROLOGY]
    assert "calcineurin-inhibitor trough level" in steps(card)
    assert "tacrolimus" in card["detail"]  # the drug advised on is listed
    near = cards(v.transplant_without_calcineurin_inhibitor)[NEPHROLOGY]
    assert "calcineurin" not in near["detail"].lower()
    assert "Tell the transplant nephrology team" in steps(near)


def test_a_failed_graft_back_on_hemodialysis_gets_the_dialysis_steps_only():
    card = cards(v.failed_graft_back_on_hemodialysis)[NEPHROLOGY]
    assert card["summary"].startswith("Cramps on dialysis")
    text = steps(card)
    assert "transplant" not in text and "calcineurin" not in text
    assert "hemodialysis the ultrafiltration rate" in text
    assert referral_resources(card) == []


def test_a_transplant_with_an_egfr_below_30_is_for_the_transplant_team_promptly():
    text = steps(cards(v.transplant_with_egfr_25)[NEPHROLOGY])
    assert "a fall from baseline needs the transplant team promptly" in text
    assert "Refer to nephrology" not in text
    near = steps(cards(v.transplant_without_calcineurin_inhibitor)[NEPHROLOGY])
    assert "baseline" not in near
    assert "baseline" not in steps(cards(v.transplant_with_egfr_45)[NEPHROLOGY])


# --- M5: 90688005 carries no stage


def test_unstaged_chronic_renal_failure_is_not_ckd_stage_4_or_5():
    found = cards(v.chronic_renal_failure_with_egfr_50)
    assert NEPHROLOGY not in found
    near = cards(v.ckd4_with_egfr_50)[NEPHROLOGY]
    assert "CKD stage 4 or 5 on record" in steps(near)


# --- W1: an eGFR means nothing on dialysis


def test_a_dialysis_card_shows_no_egfr_and_the_near_miss_does():
    found = cards(v.hemodialysis_with_egfr_8)
    assert "eGFR" not in found[NEPHROLOGY]["detail"]
    assert all("eGFR 8" not in card["detail"] for card in found.values())
    near = cards(v.ckd4_with_egfr_8)[NEPHROLOGY]
    assert "eGFR 8" in evidence(near)


# --- Review 10, second round


def test_one_hemodialysis_session_for_aki_weeks_ago_is_not_on_dialysis():
    """N17.9, one session 40 days ago, eGFR 25: the low-eGFR card (repeat, refer), its
    referral button and its eGFR, not "Cramps on dialysis"."""
    card = cards(v.aki_with_one_hemodialysis_session_egfr_25)[NEPHROLOGY]
    assert card["summary"].startswith("Low eGFR, repeat and refer if it persists")
    assert "eGFR 25" in evidence(card)
    assert "repeat creatinine within days" in card["detail"]
    assert referral_resources(card)[0]["code"]["coding"][0]["code"] == "306286007"
    assert NEPHROLOGY not in cards(v.hemodialysis_50_days_ago)  # a session weeks ago, no AKI
    near = cards(v.hemodialysis_5_days_ago)[NEPHROLOGY]  # a session this week: on dialysis
    assert near["summary"].startswith("Cramps on dialysis")


def test_a_recent_session_within_weeks_of_aki_treats_the_injury():
    card = cards(v.aki_with_hemodialysis_5_days_ago_egfr_25)[NEPHROLOGY]
    assert card["summary"].startswith("Low eGFR, repeat and refer if it persists")
    assert "Cramps on dialysis" not in card["summary"]
    assert referral_resources(card)


def test_dialysis_dependence_coded_counts_on_its_own_even_after_aki():
    """The dialysis unit's sessions may not be in this chart: Z99.2 alone is on dialysis."""
    card = cards(v.aki_with_dialysis_dependence_coded)[NEPHROLOGY]
    assert card["summary"].startswith("Cramps on dialysis")
    assert referral_resources(card) == []
    assert "eGFR" not in card["detail"]


def test_a_transplant_card_asks_for_magnesium_the_workup_panel_does_not_hold():
    found = cards(v.transplant_without_labs)
    assert "Check magnesium (often low after a kidney transplant)" in steps(found[NEPHROLOGY])
    assert "agnesium" not in steps(found[WORKUP])  # the panel only: one ask for magnesium
    asks = [c for c in found.values() if "Check magnesium" in c["detail"]]
    assert len(asks) == 1
    near = steps(cards(v.transplant_with_recent_magnesium_only)[NEPHROLOGY])
    assert "Check magnesium" not in near  # a magnesium of 5 days ago
    assert "Check calcium" in near  # the other tests are still asked for


def test_a_transplant_on_a_calcineurin_inhibitor_is_asked_for_magnesium_once():
    found = cards(v.transplant_on_tacrolimus_without_labs)
    asks = [c for c in found.values() if "Check magnesium" in c["detail"]]
    assert len(asks) == 1, [c["summary"] for c in asks]


def test_each_dialysis_lab_is_dropped_only_when_itself_recent():
    """Peritoneal dialysis, potassium 3.1 four days ago: calcium and magnesium still asked."""
    text = steps(cards(v.peritoneal_dialysis_with_potassium_31)[NEPHROLOGY])
    assert "latest calcium" in text and "latest magnesium" in text
    assert "latest potassium" not in text
    near = steps(cards(v.peritoneal_dialysis_with_potassium_31_and_calcium)[NEPHROLOGY])
    assert "latest magnesium" in near
    assert "latest calcium" not in near and "latest potassium" not in near


# --- Review 10, third round: the CKD labs one by one


def test_a_ckd4_card_with_a_recent_potassium_still_asks_for_calcium():
    """N18.4, potassium 5 days ago, nothing else: calcium on the nephrology card (with the
    workup's panel order beside it, the step says calcium is part of that panel), magnesium
    asked once (the workup card's order), potassium not asked again."""
    found = cards(v.ckd4_with_recent_potassium_only)
    text = steps(found[NEPHROLOGY])
    assert "Check calcium (part of the metabolic panel)" in text
    assert "Check potassium" not in text
    assert "Order the missing tests (metabolic panel)" in steps(found[WORKUP])
    asks = [c for c in found.values() if "agnesium" in steps(c)]
    assert len(asks) == 1, [c["summary"] for c in asks]
    assert [c["detail"].count("alcium (part of") for c in found.values()].count(1) == 1


def test_a_ckd4_card_asks_for_magnesium_itself_when_only_it_is_stale():
    """A full panel 5 days ago, magnesium 60 days ago: no workup card; the nephrology card
    asks for magnesium and for nothing recent."""
    found = cards(v.ckd4_with_magnesium_60_days_ago)
    assert WORKUP not in found
    text = steps(found[NEPHROLOGY])
    assert "Check magnesium (not in the metabolic panel)" in text
    assert "Check potassium" not in text and "Check calcium" not in text


def test_the_egfr_below_30_block_splits_its_labs_too():
    text = steps(cards(v.ckd3_with_egfr_22_and_recent_potassium_only)[NEPHROLOGY])
    assert "Refer to nephrology (KDIGO: eGFR below 30)" in text
    assert "Check calcium (part of the metabolic panel)" in text
    assert "Check potassium" not in text


def test_ckd_labs_recent_are_not_asked_and_a_missing_potassium_is_the_panels():
    """Near misses: magnesium and calcium of 5 days ago are not asked again; the missing
    potassium is the workup card's panel order, not a second ask; a complete recent workup
    leaves no lab step."""
    found = cards(v.ckd4_with_recent_magnesium_and_calcium_only)
    text = steps(found[NEPHROLOGY])
    assert "agnesium" not in text and "alcium" not in text and "otassium" not in text
    assert "Order the missing tests (metabolic panel)" in steps(found[WORKUP])
    full = steps(cards(v.ckd4_with_egfr_22)[NEPHROLOGY])
    assert "Check potassium" not in full and "Check magnesium" not in full
    assert "Check calcium" not in full
