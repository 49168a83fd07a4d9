"""The charts EHRs really send: unreadable results, undated problems, implausible values,
conflicting results, malformed resources and deceased patients (issue 12).

Each behaviour has a firing case and its near miss. Today is fixed to 2026-11-24.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routes_helpers import (cards_of, condition, medication, normal_workup,  # noqa: E402
                            observation, patient)

DVT = "I82.401"  # acute DVT of the right femoral vein (I82.4* is the urgent value set)


# ---------------------------------------------------------------------------- deceased

@pytest.mark.parametrize("deceased", [{"deceasedBoolean": True},
                                      {"deceasedDateTime": "2026-11-20"},
                                      {"deceasedDateTime": "not a date"}])
def test_a_deceased_patient_gets_no_cards_even_with_a_red_flag(deceased):
    who = {**patient(), **deceased}
    assert cards_of(condition(DVT, onset=2), *normal_workup(), who=who) == {}


@pytest.mark.parametrize("alive", [{"deceasedBoolean": False},
                                   {"deceasedDateTime": "2027-03-01"}])  # after today: replay
def test_a_living_patient_keeps_the_urgent_card(alive):
    who = {**patient(), **alive}
    assert "urgent-care" in cards_of(condition(DVT, onset=2), *normal_workup(), who=who)


# ------------------------------------------------------------------ malformed resources

@pytest.mark.parametrize("status", [{"coding": True}, {"coding": -1}, {"coding": 1.5},
                                    {"coding": 5}, {"coding": [True]}, {"coding": [{"code": 3}]}])
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
    assert "nephrology" not in cards_of(condition("161665007", clinical="resolved"),
                                        *normal_workup())


def test_synthea_hypothyroidism_code_is_thyroid_disease():
    # TSH above 10 despite a coded hypothyroidism: endocrinology (route-guide §2.6).
    cards = cards_of(condition("83664006"), observation("3016-3", 14.0, "m[IU]/L", 5),
                     *normal_workup())
    assert "endocrinology" in cards
    near = cards_of(condition("83664006"), observation("3016-3", 2.1, "m[IU]/L", 5),
                    *normal_workup())
    assert "endocrinology" not in near


@pytest.mark.parametrize("text, ingredient", [
    ("Lasix 40mg", "furosemide"), ("Crestor 10 MG Oral Tablet", "rosuvastatin"),
    ("Prograf 1 MG Oral Capsule", "tacrolimus"), ("cyclosporine 100 MG Oral Capsule", "cyclosporine"),
    ("Venofer 20 MG/ML Injection", "iron sucrose")])
def test_medicines_named_by_brand_without_a_code_are_reviewed(text, ingredient):
    card = cards_of(medication(None, text), *normal_workup())["medication-review"]
    assert ingredient in card["detail"]


def test_a_medicine_not_linked_to_cramps_is_not_reviewed():
    assert "medication-review" not in cards_of(medication(None, "Lisinopril 10 MG"),
                                                *normal_workup())
