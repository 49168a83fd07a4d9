"""The charts EHRs really send: unreadable results, undated problems, implausible values,
conflicting results, malformed resources and deceased patients (issue 12).

Each behaviour has a firing case and its near miss. Today is fixed to 2026-11-24.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routes_helpers import (cards_of, condition, normal_workup,  # noqa: E402
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
