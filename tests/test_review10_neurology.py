"""Review 10, neurology: advice that fits the patient.

- The endocrinology card's "also send a neurology referral" (a diabetic polyneuropathy with
  poorly controlled diabetes) gives way to a neurology card of its own (fasciculations, say),
  whichever is composed first, and is not asked with an open neurology referral on record
  (the step's ``refers_to`` in cards/endocrinology.yaml; engine/plan.py and engine/steps.py).
- A new neuropathy's causes (HbA1c or glucose, TSH) are asked for only with no result of the
  last year on record; B12 always (no verified B12 code, so none is read).
Vignettes in tests/vignettes.py (the one-plan corpus runs them too)."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
import vignettes as v
import yaml
from corpus import render_request
from routes_helpers import (
    PATIENT_ID,
    cards_of,
    condition,
    normal_workup,
    observation,
    route_of,
)

from cds_service.engine import plan
from cds_service.engine.facts import RouteResult
from cds_service.engine.loader import RuleError, load
from cds_service.engine.model import Step
from cds_service.render.explain.steps import next_steps

ROOT = Path(__file__).resolve().parents[1]
TODAY = date(2026, 11, 24)
ASKS_NEUROLOGY = "also send a neurology referral"
POINTER = "See the Neurology card for the rest of the plan."


def by_route(build) -> dict[str, dict]:
    return {route_of(card): card for card in render_request(build.__name__, build(), TODAY).cards}


def steps(card: dict) -> str:
    return card["detail"].split("**Next step**")[1].split("**Caveats**")[0]


# --- 1. the neurology step on the endocrinology card


def test_beside_a_neurology_card_the_endocrinology_card_points_to_it():
    found = by_route(v.polyneuropathy_with_hba1c_10_2_and_fasciculation)
    assert {"endocrinology", "neurology"} <= set(found)
    told = steps(found["endocrinology"])
    assert ASKS_NEUROLOGY not in told
    assert POINTER in told
    assert "Refer to endocrinology to intensify diabetes treatment" in told
    # The neurology card makes the referral (EMG/NCS) itself.
    assert "EMG and nerve conduction studies" in steps(found["neurology"])


def test_a_new_neuropathy_beside_poor_control_also_takes_the_neurology_step():
    found = cards_of(
        condition("E11.42", onset=100),
        condition("G62.9", onset=30),
        observation("4548-4", 10.2, "%", 30),
        *normal_workup(),
    )
    assert ASKS_NEUROLOGY not in steps(found["endocrinology"])
    assert POINTER in steps(found["endocrinology"])
    assert "Refer to neurology for nerve conduction studies" in steps(found["neurology"])


def test_near_miss_without_a_neurology_card_the_step_stays():
    found = by_route(v.polyneuropathy_with_hba1c_10_2)
    assert "neurology" not in found
    assert ASKS_NEUROLOGY in steps(found["endocrinology"])
    assert POINTER not in found["endocrinology"]["detail"]


def test_an_open_neurology_referral_leaves_the_step_out():
    found = by_route(v.polyneuropathy_with_hba1c_10_2_and_open_neurology_referral)
    assert "neurology" not in found
    told = steps(found["endocrinology"])
    assert ASKS_NEUROLOGY not in told
    assert "Refer to endocrinology to intensify diabetes treatment" in told


def test_an_open_referral_coded_locally_is_recognised_by_its_words():
    local = {
        "resourceType": "ServiceRequest",
        "id": "sr-local-neuro",
        "status": "active",
        "intent": "order",
        "code": {"text": "Ambulatory referral to Neurology"},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "authoredOn": "2026-11-19",
    }
    found = cards_of(
        condition("E11.42", onset=100),
        observation("4548-4", 10.2, "%", 30),
        local,
        *normal_workup(),
    )
    assert ASKS_NEUROLOGY not in steps(found["endocrinology"])


def test_near_miss_a_completed_neurology_referral_asks_again():
    found = by_route(v.polyneuropathy_with_hba1c_10_2_and_completed_neurology_referral)
    assert ASKS_NEUROLOGY in steps(found["endocrinology"])


def _result(route, step: Step) -> RouteResult:
    return RouteResult(route, [], [], [], route.indicator, None, None, [step])


def test_the_plan_drops_the_step_whichever_card_comes_first():
    routes = {r.code: r for r in load(ROOT / "cards").routes}
    asks = Step("Also send a neurology referral.", refers_to="neurology")
    own = Step("Refer to neurology.")
    for order in (["endocrinology", "neurology"], ["neurology", "endocrinology"]):
        results = {
            "endocrinology": _result(routes["endocrinology"], asks),
            "neurology": _result(routes["neurology"], own),
        }
        plan.compose([results[code] for code in order], frozenset())
        assert results["endocrinology"].steps == []
        assert results["endocrinology"].superseded_by == ["Neurology"]
        assert results["neurology"].steps == [own]


@pytest.mark.parametrize(
    ("target", "message"),
    [("neurolgy", "'neurolgy' is not another route"), ("endocrinology", "not another route")],
)
def test_refers_to_must_name_another_route_with_a_referral(tmp_path, target, message):
    cards_dir = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", cards_dir)
    path = cards_dir / "endocrinology.yaml"
    data = yaml.safe_load(path.read_text())
    data["content"]["diabetic-polyneuropathy-neurology"]["steps"][1]["refers_to"] = target
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(RuleError, match=message):
        load(cards_dir)


# --- 2. a new neuropathy's causes, asked only when no recent result tells


def test_a_recent_glucose_leaves_out_the_glucose_check():
    told = steps(by_route(v.new_neuropathy_with_glucose_only)["neurology"])
    assert "Check HbA1c or fasting glucose" not in told
    assert "Check TSH" in told
    assert "Check vitamin B12" in told


def test_recent_tsh_and_hba1c_leave_only_b12():
    told = steps(by_route(v.new_neuropathy_with_recent_tsh_and_hba1c)["neurology"])
    assert "Check HbA1c or fasting glucose" not in told
    assert "Check TSH" not in told
    assert "Check vitamin B12" in told
    assert "Refer to neurology for nerve conduction studies" in told


def test_near_miss_an_old_tsh_and_no_glucose_ask_for_both():
    patient = render_request(
        "old TSH, no glucose", v.new_neuropathy_with_old_tsh_and_no_glucose(), TODAY
    )
    found = {route_of(card): card for card in patient.cards}
    told = steps(found["neurology"])
    assert "Check TSH" in told
    assert "Check vitamin B12" in told
    # No glucose or HbA1c: asked for, once in the plan, by the workup card's order of glucose.
    assert "Check HbA1c or fasting glucose" not in told
    assert "See the Primary care workup card" in told
    workup = next(r for r in patient.results if r.route.code == "primary-care-workup")
    ordered = {c for f in workup.facts if f.order for c in getattr(f.evidence, "concepts", ())}
    assert "glucose" in ordered


def test_near_miss_no_result_and_no_other_card_asks_for_the_glucose_on_this_card():
    """An unreadable glucose (no unit) is on record: the workup card does not order one, so
    the neurology card asks."""
    workup = [o for o in normal_workup() if o["code"]["coding"][0]["code"] != "2345-7"]
    unreadable = observation("2345-7", 95, None, 20)
    found = cards_of(condition("G62.9", onset=30), unreadable, *workup)
    assert "Check HbA1c or fasting glucose" in steps(found["neurology"])


def test_the_explanation_page_says_when_the_neurology_step_shows():
    ruleset = load(ROOT / "cards")
    endocrinology = next(r for r in ruleset.routes if r.code == "endocrinology")
    block = endocrinology.content["diabetic-polyneuropathy-neurology"]
    assert "[not with an open Neurology referral on record or a Neurology card]" in (
        next_steps(block, endocrinology, ruleset)
    )
