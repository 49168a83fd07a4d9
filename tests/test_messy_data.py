"""The charts EHRs really send: unreadable results, undated problems, implausible values,
conflicting results, malformed resources and deceased patients (issue 12).

Each behaviour has a firing case and its near miss. Today is fixed to 2026-11-24.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routes_helpers import (
    cards_of,
    condition,
    day,
    medication,  # noqa: E402
    normal_workup,
    observation,
    patient,
)

DVT = "I82.401"  # acute DVT of the right femoral vein (I82.4* is the urgent value set)


# ---------------------------------------------------------------------------- deceased


@pytest.mark.parametrize(
    "deceased",
    [
        {"deceasedBoolean": True},
        {"deceasedDateTime": "2026-11-20"},
        {"deceasedDateTime": "not a date"},
    ],
)
def test_a_deceased_patient_gets_no_cards_even_with_a_red_flag(deceased):
    who = {**patient(), **deceased}
    assert cards_of(condition(DVT, onset=2), *normal_workup(), who=who) == {}


@pytest.mark.parametrize(
    "alive", [{"deceasedBoolean": False}, {"deceasedDateTime": "2027-03-01"}]
)  # after today: replay
def test_a_living_patient_keeps_the_urgent_card(alive):
    who = {**patient(), **alive}
    assert "urgent-care" in cards_of(condition(DVT, onset=2), *normal_workup(), who=who)


# ------------------------------------------------------------------ malformed resources


@pytest.mark.parametrize(
    "status",
    [
        {"coding": True},
        {"coding": -1},
        {"coding": 1.5},
        {"coding": 5},
        {"coding": [True]},
        {"coding": [{"code": 3}]},
    ],
)
def test_malformed_clinical_status_on_another_condition_costs_no_card(status):
    broken = condition("E11.9")
    broken["clinicalStatus"] = status
    broken["verificationStatus"] = status
    assert "urgent-care" in cards_of(condition(DVT, onset=2), broken, *normal_workup())


# ------------------------------------------------- codes and names real records use


def test_kidney_transplant_recipient_is_a_kidney_patient():
    assert "nephrology" in cards_of(condition("161665007"), *normal_workup())
    assert "nephrology" in cards_of(condition("236436003"), *normal_workup())


def test_resolved_transplant_history_is_no_kidney_signal():
    assert "nephrology" not in cards_of(
        condition("161665007", clinical="resolved"), *normal_workup()
    )


def test_synthea_hypothyroidism_code_is_thyroid_disease():
    # TSH above 10 with a coded hypothyroidism: managed in primary care first (ATA 2014),
    # worded as hypothyroidism, which only a code read as thyroid disease gives.
    cards = cards_of(
        condition("83664006"), observation("3016-3", 14.0, "m[IU]/L", 5), *normal_workup()
    )
    assert cards["primary-care-workup"]["summary"].startswith("Hypothyroidism with TSH above 10")
    near = cards_of(
        condition("83664006"), observation("3016-3", 2.1, "m[IU]/L", 5), *normal_workup()
    )
    assert "Hypothyroidism" not in near.get("primary-care-workup", {}).get("summary", "")


@pytest.mark.parametrize(
    "text, ingredient",
    [
        ("Lasix 40mg", "furosemide"),
        ("Crestor 10 MG Oral Tablet", "rosuvastatin"),
        ("Prograf 1 MG Oral Capsule", "tacrolimus"),
        ("cyclosporine 100 MG Oral Capsule", "cyclosporine"),
        ("Venofer 20 MG/ML Injection", "iron sucrose"),
    ],
)
def test_medicines_named_by_brand_without_a_code_are_reviewed(text, ingredient):
    card = cards_of(medication(None, text), *normal_workup())["medication-review"]
    assert ingredient in card["detail"]


def test_a_medicine_not_linked_to_cramps_is_not_reviewed():
    assert "medication-review" not in cards_of(
        medication(None, "Lisinopril 10 MG"), *normal_workup()
    )


def test_a_route_that_crashes_on_a_malformed_resource_skips_that_resource(monkeypatch):
    """Should a malformed resource get past screening and crash a criterion, the route is
    evaluated again with every resource R4B-validated: the DVT card is not lost."""
    from cds_service.engine.criteria import coded as criteria

    real = criteria.condition_fact

    def fragile(record, criterion_id, resource, concept, **kwargs):
        if resource.get("code", {}).get("text") == 5:  # invalid for R4B (text is a string)
            raise TypeError("a defect reached by malformed data")
        return real(record, criterion_id, resource, concept, **kwargs)

    monkeypatch.setattr(criteria, "condition_fact", fragile)
    broken = condition("I82.402", onset=None)
    broken["code"]["text"] = 5
    cards = cards_of(condition(DVT, onset=2), broken, *normal_workup())
    assert "urgent-care" in cards
    assert DVT in cards["urgent-care"]["detail"]


# ------------------------------------------------------------- results that cannot be read


def urgent_and_workup(*resources):
    cards = cards_of(
        *resources, *[r for r in normal_workup() if r["code"]["coding"][0]["code"] != "2823-3"]
    )
    return cards.get("urgent-care"), cards.get("primary-care-workup")


def potassium(value, unit="mmol/L", **kwargs):
    return observation("2823-3", value, unit, 1, **kwargs)


def test_potassium_without_a_unit_is_never_present_and_is_listed_for_review():
    urgent, workup = urgent_and_workup(potassium(2.4, None))
    assert urgent is None  # no number to trust: not an emergency card on its own
    assert (
        "cannot be read (no unit" in workup["detail"] and "review this result" in workup["detail"]
    )


def test_potassium_with_its_unit_is_the_urgent_card():  # near miss of the above
    urgent, _ = urgent_and_workup(potassium(2.4))
    assert urgent is not None and "Potassium 2.4 mmol/L" in urgent["detail"]


def _as_text(value: str) -> dict:
    result = potassium(0)
    del result["valueQuantity"]
    result["valueString"] = value
    return result


def test_a_number_with_its_unit_written_as_text_is_read_with_its_comparator():
    urgent, _ = urgent_and_workup(_as_text("<2.5 mmol/L"))
    assert urgent is not None
    assert "Potassium <2.5 mmol/L" in urgent["detail"]  # never the point value "2.5"
    assert 'read from the text "<2.5 mmol/L"' in urgent["detail"]


def test_a_number_written_as_text_without_a_unit_is_listed_for_review():  # near miss
    urgent, workup = urgent_and_workup(_as_text("2.9"))
    assert urgent is None  # the unit is never guessed
    assert "a number written as text, with no unit" in workup["detail"]


def test_words_written_as_the_value_are_listed_for_review():
    urgent, workup = urgent_and_workup(_as_text("hemolyzed"))
    assert urgent is None
    assert "a text value only" in workup["detail"] and '"hemolyzed"' in workup["detail"]


@pytest.mark.parametrize(
    "flag, urgent_expected", [("LL", True), ("AA", True), ("HH", True), ("L", False), ("H", False)]
)
def test_a_critical_flag_without_a_number_counts_as_critical(flag, urgent_expected):
    result = potassium(0)
    del result["valueQuantity"]
    result["interpretation"] = [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                    "code": flag,
                }
            ]
        }
    ]
    urgent, workup = urgent_and_workup(result)
    if urgent_expected:
        assert "flagged critical" in urgent["detail"] and f"({flag})" in urgent["detail"]
    else:  # an abnormal, not critical, flag: a result to review, not an emergency
        assert urgent is None
        assert "review this result" in workup["detail"]


def test_implausible_potassium_is_no_emergency_and_is_shown_for_checking():
    urgent, workup = urgent_and_workup(potassium(45))
    assert urgent is None
    assert "Potassium 45 mmol/L" in workup["detail"] and "implausible" in workup["detail"]


def test_implausible_hba1c_is_not_a_result():
    """An implausible HbA1c never counts as measured, and on its own (a usable glucose beside
    it, diabetes known) it is not a workup (issue 13): it is shown where the HbA1c is used."""
    implausible = observation("4548-4", 2.9, "%", 10)
    cards = cards_of(condition("E11.9"), implausible, *normal_workup())
    assert "primary-care-workup" not in cards and "endocrinology" not in cards
    # Where the HbA1c is used: listed on the endocrinology card when that card fires.
    cards = cards_of(condition("E11.9"), condition("E05.90"), implausible, *normal_workup())
    detail = cards["endocrinology"]["detail"]
    assert "**Also on record**" in detail
    assert "HbA1c 2.9 %" in detail and "implausible" in detail
    near = cards_of(condition("E11.9"), observation("4548-4", 10.2, "%", 10), *normal_workup())
    assert "endocrinology" in near  # a plausible poorly controlled HbA1c still refers
    assert "implausible" not in near["endocrinology"]["detail"]  # a usable one: not for review


def test_a_diabetic_with_no_hba1c_at_all_is_asked_for_one():
    cards = cards_of(condition("E11.9"), *normal_workup())
    assert "Order HbA1c" in cards["primary-care-workup"]["detail"]
    measured = cards_of(condition("E11.9"), observation("4548-4", 6.8, "%", 10), *normal_workup())
    assert "primary-care-workup" not in measured


def test_an_implausible_hba1c_that_is_the_only_glucose_result_is_reviewed():
    workup = [o for o in normal_workup() if o["code"]["coding"][0]["code"] != "2345-7"]
    cards = cards_of(observation("4548-4", 2.9, "%", 10), *workup)
    detail = cards["primary-care-workup"]["detail"]
    assert "HbA1c 2.9 %" in detail and "implausible" in detail
    plausible = cards_of(observation("4548-4", 5.4, "%", 10), *workup)
    assert "primary-care-workup" not in plausible


# ------------------------------------------------------------------ conflicting results


@pytest.mark.parametrize("order", [0, 1])
def test_same_instant_egfrs_are_decided_by_the_worse_value_in_any_order(order):
    pair = [
        observation("33914-3", 82, "mL/min", 5, time="08:00:00", rid="egfr-a"),
        observation("98979-8", 25, "mL/min/{1.73_m2}", 5, time="08:00:00", rid="egfr-b"),
    ]
    if order:
        pair.reverse()
    workup = [r for r in normal_workup() if r["code"]["coding"][0]["code"] != "2160-0"]
    cards = cards_of(condition("N18.4"), *pair, *workup)
    assert "eGFR 25" in cards["nephrology"]["detail"]


def test_creatinine_discordant_with_the_reported_egfr_drives_the_kidney_rule():
    workup = [r for r in normal_workup() if r["code"]["coding"][0]["code"] != "2160-0"]
    who = patient(birth="1968-05-01")  # 58 years old
    discordant = [observation("2160-0", 3.1, "mg/dL", 3), observation("33914-3", 88, "mL/min", 3)]
    card = cards_of(*discordant, *workup, who=who)["nephrology"]
    assert "**estimated** with CKD-EPI 2021 from creatinine 3.1 mg/dL" in card["detail"]
    assert "age 58, male" in card["detail"] and "**Discordant**" in card["detail"]
    assert "reported as 88 mL/min, used as mL/min/1.73m²" in card["detail"]
    agreeing = [observation("2160-0", 0.9, "mg/dL", 3), observation("33914-3", 88, "mL/min", 3)]
    assert "nephrology" not in cards_of(*agreeing, *workup, who=who)


def test_egfr_in_ml_min_is_shown_as_reported():
    workup = [r for r in normal_workup() if r["code"]["coding"][0]["code"] != "2160-0"]
    card = cards_of(condition("N18.4"), observation("33914-3", 4.26, "mL/min", 3), *workup)[
        "nephrology"
    ]
    assert "reported as 4.26 mL/min, used as mL/min/1.73m²" in card["detail"]


def test_newer_normal_creatinine_replaces_an_older_low_egfr():
    cards = cards_of(observation("33914-3", 22, "mL/min/{1.73_m2}", 100), *normal_workup())
    assert "nephrology" not in cards


# --------------------------------------------------------------------- albumin and calcium


def calcium_cards(calcium, albumin=None, albumin_days=1):
    workup = [r for r in normal_workup() if r["code"]["coding"][0]["code"] != "17861-6"]
    extra = [observation("1751-7", albumin, "g/dL", albumin_days)] if albumin is not None else []
    return cards_of(observation("17861-6", calcium, "mg/dL", 1), *extra, *workup)


def test_low_calcium_with_low_albumin_is_corrected_and_no_emergency():
    cards = calcium_cards(6.8, albumin=2.0)
    assert "urgent-care" not in cards


def test_low_calcium_without_albumin_stays_critical():
    assert "urgent-care" in calcium_cards(6.8)


def test_albumin_two_days_earlier_is_not_used():
    assert "urgent-care" in calcium_cards(6.8, albumin=2.0, albumin_days=3)


def test_corrected_calcium_still_critical_says_how_it_was_derived():
    card = calcium_cards(5.5, albumin=3.0)["urgent-care"]
    assert "Calcium (total) 6.3 mg/dL" in card["detail"]
    assert "measured 5.5 mg/dL, corrected for albumin 3 g/dL" in card["detail"]


# ------------------------------------------------------------------------- DVT and dates


def test_dvt_with_onset_20_days_ago_recorded_2_days_ago_is_urgent():
    card = cards_of(condition(DVT, onset=20, recorded=2), *normal_workup())["urgent-care"]
    assert f"onset {day(20)}, recorded {day(2)}" in card["detail"]


def test_dvt_with_no_date_is_urgent_and_says_the_date_is_missing():
    card = cards_of(condition(DVT, onset=None), *normal_workup())["urgent-care"]
    assert "onset and recorded date not recorded: counted as recent" in card["detail"]


def test_old_dvt_recorded_today_is_not_shown_with_its_recording_as_onset():
    card = cards_of(condition(DVT, onset=None, recorded=0), *normal_workup())["urgent-care"]
    assert f"recorded {day(0)} (onset not recorded)" in card["detail"]
    assert f"onset {day(0)}" not in card["detail"]


def test_old_dvt_is_not_new():  # near miss: both dates older than 14 days
    assert "urgent-care" not in cards_of(condition(DVT, onset=40, recorded=30), *normal_workup())


def test_dvt_already_anticoagulated_is_a_warning_to_review_not_the_ed():
    cards = cards_of(
        condition(DVT, onset=5),
        medication(None, "Apixaban 5 MG Oral Tablet", authored=4),
        *normal_workup(),
    )
    card = cards["urgent-care"]
    assert card["indicator"] == "warning"
    assert card["summary"].startswith("DVT on anticoagulation")
    assert "suggestions" not in card


@pytest.mark.parametrize("authored", [30, None])
def test_anticoagulant_from_before_the_dvt_does_not_downgrade_it(authored):
    med = medication(None, "Warfarin Sodium 5 MG Oral Tablet", authored=authored or 1)
    if authored is None:
        del med["authoredOn"]
    card = cards_of(condition(DVT, onset=5), med, *normal_workup())["urgent-care"]
    assert card["indicator"] == "critical"


def test_anticoagulated_dvt_with_another_red_flag_stays_critical():
    cards = cards_of(
        condition(DVT, onset=5),
        medication(None, "Eliquis 5 MG", authored=4),
        observation("2951-2", 120, "mmol/L", 1),
        *normal_workup(),
    )
    assert cards["urgent-care"]["indicator"] == "critical"


def d_dimer(value, days_ago=1, unit="ng/mL{FEU}"):
    return observation("48065-7", value, unit, days_ago)


def test_suspected_dvt_from_signs_and_a_raised_d_dimer():
    card = cards_of(condition("449614009", onset=1), d_dimer(900), *normal_workup())["urgent-care"]
    assert "LOINC 48065-7" in card["detail"] and "SNOMED CT 449614009" in card["detail"]


def test_suspected_dvt_from_a_sign_recorded_as_an_observation():
    sign = observation("300954003", 0, None, 1, system="snomed")
    del sign["valueQuantity"]
    card = cards_of(sign, d_dimer(0.9, unit="mg/L{FEU}"), *normal_workup())["urgent-care"]
    assert "recorded as a finding" in card["detail"]


@pytest.mark.parametrize(
    "resources",
    [
        [d_dimer(900)],  # a D-dimer alone is non-specific
        [condition("449614009", onset=1), d_dimer(450)],  # below 500 FEU
        [condition("449614009", onset=1), d_dimer(900, days_ago=4)],  # older than 72 h
        [condition("449614009", onset=20), d_dimer(900)],  # the sign is old
    ],
)
def test_suspected_dvt_near_misses(resources):
    assert "urgent-care" not in cards_of(*resources, *normal_workup())


@pytest.mark.parametrize(
    "text, ingredient", [("Simvistatin 10 MG", "simvastatin"), ("Furosemid 40 mg", "furosemide")]
)
def test_a_misspelt_medicine_without_a_code_is_reviewed_and_flagged(text, ingredient):
    card = cards_of(medication(None, text), *normal_workup())["medication-review"]
    assert ingredient in card["detail"] and "similar name only" in card["detail"]


@pytest.mark.parametrize(
    "text", ["Amlodipine 5 MG", "Losartan 50 MG", "Metformin 500 MG", "Hydralazine 25 MG"]
)
def test_a_similar_looking_unrelated_medicine_is_not_matched(text):
    assert "medication-review" not in cards_of(medication(None, text), *normal_workup())


def test_a_different_drug_with_a_similar_name_is_not_a_misspelling():
    # levalbuterol is not albuterol misspelt: whole-word names only (route-guide §4.3)
    assert "medication-review" not in cards_of(
        medication(None, "levalbuterol inhaler"), *normal_workup()
    )
