"""Issue 22: next steps that look at the record. Each defect of the issue's first bullets,
as a vignette (tests/vignettes.py), and its near miss where the step must still be given."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import vignettes as v
import yaml
from routes_helpers import next_steps as steps
from routes_helpers import vignette_cards as cards

from cds_service.engine.loader import load
from cds_service.engine.model import RuleError
from cds_service.render.explain.steps import next_steps

ROOT = Path(__file__).resolve().parents[1]


def test_a_blood_lead_on_the_card_is_not_ordered_again():
    assert "blood lead" not in steps(cards(v.lead_48_on_the_card)["urgent-care"]).lower()
    near = steps(cards(v.lead_exposure_without_a_level)["urgent-care"])
    assert "Order a blood lead level" in near


def test_an_abi_on_the_card_is_not_asked_for_again():
    assert "ABI" not in steps(cards(v.abi_072_on_the_card)["vascular"])
    assert "Confirm with an ABI" in steps(cards(v.claudication_without_abi)["vascular"])


def test_stop_the_statin_wins_over_check_ck_and_a_dose_change():
    found = cards(v.statin_with_ck_2480)
    assert "Stop the statin" in steps(found["urgent-care"])
    assert "atorvastatin" in found["urgent-care"]["detail"]  # the drug advised on is listed
    medication = steps(found["medication-review"])
    assert "CK" not in medication and "dose" not in medication
    assert "Urgent care" in medication  # says where the plan is
    near = steps(cards(v.statin_alone)["medication-review"])
    assert "check CK" in near and "lower dose" in near


def test_drug_advice_only_for_the_classes_on_the_card():
    statin = steps(cards(v.statin_alone)["medication-review"])
    assert "beta-2" not in statin and "inhaler" not in statin
    laba = steps(cards(v.salmeterol_alone)["medication-review"])
    assert "inhaler regimen" in laba and "statin" not in laba
    albuterol = steps(cards(v.albuterol_with_potassium_32)["medication-review"])
    assert "long-acting" not in albuterol and "inhaler regimen" not in albuterol
    assert "Do not stop the reliever" in albuterol


def test_no_levothyroxine_dose_advice_without_thyroid_hormone_on_record():
    # Both are managed in primary care (ATA 2014; clinical review, session 10).
    untreated = steps(cards(v.tsh_12_untreated_hypothyroidism)["primary-care-workup"])
    assert "adherence" not in untreated and "no thyroid hormone on record" in untreated
    treated = cards(v.tsh_12_on_levothyroxine)["primary-care-workup"]
    assert "adherence" in steps(treated) and "levothyroxine" in treated["detail"]


def test_dialysis_with_a_critical_potassium_gets_no_egfr_referral_text():
    found = cards(v.dialysis_with_potassium_68)
    assert "eGFR below 30" not in steps(found["nephrology"])
    assert "dialysate" in steps(found["nephrology"])
    assert "persistent" not in found["nephrology"]["detail"]
    near = steps(cards(v.ckd4_with_egfr_22)["nephrology"])
    assert "Refer to nephrology (KDIGO" in near


def test_a_single_value_is_never_called_persistent():
    card = cards(v.ckd3_with_one_high_potassium)["nephrology"]
    assert "persistent" not in steps(card) and "Recheck" in steps(card)


def test_a_coded_dvt_gets_treatment_not_the_diagnostic_pathway():
    for build in (v.coded_dvt, v.coded_dvt_in_pregnancy):
        text = steps(cards(build)["urgent-care"])
        assert "pretest" not in text and "D-dimer" not in text
        assert "anticoagulation" in text
    assert "low-molecular-weight heparin" in steps(cards(v.coded_dvt_in_pregnancy)["urgent-care"])
    assert "heparin" not in steps(cards(v.coded_dvt)["urgent-care"])
    assert "compression ultrasound" in steps(cards(v.suspected_dvt)["urgent-care"])


def test_critical_limb_ischaemia_with_an_abi_leads_with_the_limb_at_risk():
    text = steps(cards(v.clti_with_abi_048)["vascular"])
    assert "Confirm with an ABI" not in text
    assert text.strip().startswith("- Urgent vascular surgery referral")
    assert "limits life" not in text  # no routine referral beside the urgent one


def test_post_thyroidectomy_hypocalcaemia_is_named_without_tsh_or_ck_workup():
    card = cards(v.calcium_low_six_days_after_thyroidectomy)["primary-care-workup"]
    assert "hypoparathyroidism" in steps(card)
    assert "TSH" not in card["detail"] and "CK" not in steps(card)
    assert "vitamin D" not in steps(card)
    near = steps(cards(v.postprocedural_hypothyroidism_years_ago)["primary-care-workup"])
    assert "Order TSH" in near and "Order CK" in near
    # Hypothyroidism after a procedure (radioiodine included) is no sign of neck surgery.
    irradiated = cards(v.calcium_low_with_recent_postprocedural_hypothyroidism)
    assert "hypoparathyroidism" not in steps(irradiated["primary-care-workup"])
    assert "Order TSH" in steps(irradiated["primary-care-workup"])


def test_a_coded_hyperthyroidism_is_not_confirmed_nor_called_hypothyroid():
    found = cards(v.hyperthyroidism_coded_without_tsh)
    assert "Confirm" not in steps(found["endocrinology"])
    workup = steps(found["primary-care-workup"])
    assert "hypothyroid" not in workup and "Order TSH with free T4" in workup
    assert "Confirm the suppressed TSH" in steps(cards(v.tsh_suppressed_uncoded)["endocrinology"])


@pytest.mark.parametrize(
    "step, message",
    [
        ({"text": "x", "when": ["no-such-rule"]}, "unknown criterion"),
        ({"text": "x", "for_classes": ["no-such-class"]}, "unknown medication class"),
        ({"text": "x", "unless_recent": ["no-such-test"]}, "unknown observation concept"),
        ({"text": "x", "drugs": {"statin": "halve"}}, "vascular.yaml"),
        ({"text": "x", "recent_days": 7, "unless_recent": ["abi"]}, "vascular.yaml"),
    ],
)
def test_a_step_naming_something_undefined_is_refused(tmp_path, step, message):
    """The loader resolves every name a step holds; the schema bounds the rest (a window
    under 30 days is not 'recent' for the Done-when test)."""
    cards_dir = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", cards_dir)
    path = cards_dir / "vascular.yaml"
    data = yaml.safe_load(path.read_text())
    data["content"]["pad"].pop("next_step", None)
    data["content"]["pad"]["steps"] = [step]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(RuleError, match=message):
        load(cards_dir)


def test_check_rules_explain_shows_each_step_condition():
    ruleset = load(ROOT / "cards")
    vascular = next(r for r in ruleset.routes if r.code == "vascular")
    described = next_steps(vascular.content["pad"], vascular, ruleset)
    assert (
        "Confirm with an ABI (ACC/AHA 2024). [not with chronic limb-threatening ischemia (rest"
        " pain or ulcer) coded in the last 180 days or ABI in the severe ischemic range (0.40 or"
        " less); only with no ankle-brachial index result in the last 365 days]" in (described)
    )
