"""The rules over real-world-shaped records (../shared/fhir-real, Synthea) with a leg-cramp
problem added: the routes each patient's data supports fire, no urgent card is invented,
and nothing crashes on real data."""

from __future__ import annotations

import pytest

from cds_service.config import Settings
from cds_service.hooks import validator
from cds_service.service import CdsService
from synthea import SYNTHEA_DIR, hook_request, synthea_files

pytestmark = pytest.mark.skipif(not SYNTHEA_DIR.exists(), reason="shared/fhir-real not present")

# patient file -> (routes that must fire, routes that must not fire), as of 2026-11-24
EXPECTED = {
    "Gabriel_Blanda_95f1227c.json": ({"nephrology", "medication-review", "primary-care-workup"},
                                     {"urgent-care", "vascular", "orthopedics"}),
    # eGFR 5 is from 2023-03 (3.7 years old): stale data fires no referral; the workup card
    # asks for new kidney function and shows that last value.
    "Mariana_Sierra_e3c9dc1f.json": ({"primary-care-workup"}, {"urgent-care", "nephrology"}),
    "Conchita_Reynoso_32575559.json": ({"neurology", "medication-review", "primary-care-workup"},
                                       {"urgent-care", "nephrology", "endocrinology"}),
    "Daryl_Heaney_f44fe3a9.json": ({"neurology"}, {"urgent-care", "nephrology", "endocrinology"}),
    "Shandra_Glover_afe4d0ff.json": ({"nephrology", "neurology", "medication-review"},
                                     {"urgent-care"}),
    "Myron_Schuster_63a7cbab.json": ({"medication-review", "primary-care-workup"},
                                     {"urgent-care", "nephrology", "endocrinology", "neurology"}),
    "Alicia_Serrano_6f867e8e.json": ({"primary-care-workup"},
                                     {"urgent-care", "nephrology", "endocrinology", "neurology"}),
    "Lance_Johnston_26b77000.json": ({"primary-care-workup", "medication-review"},
                                     {"urgent-care", "nephrology", "endocrinology", "neurology"}),
    "Sheena_Kub_aa265b78.json": (set(), {"urgent-care", "nephrology", "endocrinology",
                                         "neurology", "vascular"}),
    "Santina_Lind_49d2ef3d.json": ({"primary-care-workup"}, {"urgent-care", "nephrology"}),
}


@pytest.fixture(scope="module")
def service():
    return CdsService(Settings.from_env({}, today="2026-11-24"), fetcher=lambda *a: {})


def test_every_shared_patient_has_an_expectation():
    assert {p.name for p in synthea_files()} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_routes_supported_by_the_record(service, name):
    outcome = service.evaluate(hook_request(SYNTHEA_DIR / name))
    validator("cds-response").validate(outcome.response)
    fired = set(outcome.routes)
    required, forbidden = EXPECTED[name]
    assert required <= fired, f"missing {required - fired}; fired {fired}"
    assert not (forbidden & fired), f"should not fire {forbidden & fired}"
    for card in outcome.response["cards"]:
        assert len(card["summary"]) < 140


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_cards_without_a_leg_cramp_problem(service, name):
    outcome = service.evaluate(hook_request(SYNTHEA_DIR / name, with_cramps=False))
    assert outcome.response == {"cards": []}


def test_stale_kidney_failure_is_shown_on_the_workup_card(service):
    outcome = service.evaluate(hook_request(SYNTHEA_DIR / "Mariana_Sierra_e3c9dc1f.json"))
    card = next(c for c in outcome.response["cards"]
                if c["source"]["topic"]["code"] == "primary-care-workup")
    assert "eGFR 5 mL/min/1.73m² on 2023-03-20" in card["detail"]
