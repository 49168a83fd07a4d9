"""Issue 22, Done when: over every example, shared chart and test vignette (tests/corpus.py),

- no next step asks for a test whose result from the last 30 days is on the same card;
- no drug-class advice without that class on the card;
- no two cards for one patient contradict (stop vs continue or change a drug; the same test
  asked twice).

Each property is checked twice: on the data the steps are made of (a step's tests and drug
classes, as the rule files declare them) and on the words a clinician reads (a step that
says "order/check/confirm with" a test, or names a drug class), so a step that forgot its
declaration is caught too.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta

import pytest
from corpus import Rendered, everyone

from cds_service.engine.facts import LabResult, MedicationOrder, MissingResult, RouteResult
from cds_service.engine.plan import steps_of
from cds_service.render import cards

RECENT = timedelta(days=30)
# How a next step names a test it asks for (the rule files' wording), by concept.
ASKED_IN_WORDS = {
    "abi": r"\bABI\b",
    "ck": r"\bCK\b",
    "blood-lead": r"\bblood lead\b",
    "tsh": r"\bTSH\b",
    "magnesium": r"\bmagnesium\b",
    "potassium": r"\bpotassium\b",
    "sodium": r"\bsodium\b",
    "hba1c": r"\bHbA1c\b",
}
ASKING = r"\b(order|check|confirm with|measure)\b[^.;:]{0,40}?"  # then the test's name
# Words that advise on a drug class, by class (the drug named, or its kind).
CLASS_IN_WORDS = {
    "statin": r"\bstatin\b",
    "beta2-agonist": r"\blong-acting beta-2 agonist\b|\binhaler regimen\b",
    "beta2-agonist-short-acting": r"\bthe reliever\b",
    "beta2-agonist-oral": r"\bbeta-2 agonist tablets\b",
    "thyroid-hormone": r"\badherence\b",
    "quinine": r"\bquinine\b",
}
PATIENTS = everyone()


def _ids(patient: Rendered) -> str:
    return patient.label


def _recent_tests(result: RouteResult, today: datetime) -> set[str]:
    """The tests with a result from the last 30 days on this card."""
    return {
        f.evidence.concept.name
        for f in result.facts + result.context
        if isinstance(f.evidence, LabResult) and f.when and today - f.when <= RECENT
    }


def _classes(result: RouteResult) -> set[str]:
    return {
        f.evidence.drug_class
        for f in result.facts + result.context
        if isinstance(f.evidence, MedicationOrder)
    }


def _today(patient: Rendered) -> datetime:
    from datetime import UTC

    return datetime(patient.today.year, patient.today.month, patient.today.day, tzinfo=UTC)


def test_the_corpus_holds_every_kind_of_patient():
    labels = [p.label.split()[0] for p in PATIENTS]
    assert labels.count("example") >= 10 and labels.count("shared") >= 15
    assert labels.count("vignette") >= 15
    assert sum(len(p.cards) for p in PATIENTS) >= 60


@pytest.mark.parametrize("patient", PATIENTS, ids=_ids)
def test_no_step_asks_for_a_test_recent_on_its_card(patient):
    for result in patient.results:
        recent = _recent_tests(result, _today(patient))
        for step in steps_of(result):
            assert not step.tests & recent, (result.route.code, step.text, recent)
            for test in recent & set(ASKED_IN_WORDS):
                found = re.search(ASKING + ASKED_IN_WORDS[test], step.text, re.IGNORECASE)
                assert not found, (result.route.code, step.text, test)


@pytest.mark.parametrize("patient", PATIENTS, ids=_ids)
def test_no_drug_class_advice_without_that_class_on_the_card(patient):
    for result in patient.results:
        on_card = _classes(result)
        for step in steps_of(result):
            advised = set(step.for_classes) | {c for c, action in step.drugs if action != "start"}
            if advised:
                assert advised & on_card, (result.route.code, step.text, on_card)
            for drug_class, pattern in CLASS_IN_WORDS.items():
                if re.search(pattern, step.text, re.IGNORECASE) and "start" not in step.text:
                    assert drug_class in on_card, (result.route.code, step.text, on_card)


@pytest.mark.parametrize("patient", PATIENTS, ids=_ids)
def test_no_two_cards_contradict_or_ask_the_same_test(patient):
    actions: dict[str, tuple[str, str]] = {}
    asked: dict[str, str] = {}
    for result in patient.results:  # a test offered as an order is asked by its card
        for fact in result.facts:
            if fact.order and isinstance(fact.evidence, MissingResult):
                for test in fact.evidence.concepts:
                    asked.setdefault(test, result.route.code)
    for result in patient.results:
        code = result.route.code
        for step in steps_of(result):
            for drug_class, action in step.drugs:
                other = actions.get(drug_class)
                assert other is None or other[1] == code, (drug_class, action, other, code)
                actions[drug_class] = (action, code)
            for test in step.tests:
                assert asked.get(test, code) == code, (test, asked.get(test), code)
                asked[test] = code
    words = [c["detail"].split("**Next step**")[-1] for c in patient.cards]
    stops = [w for w in words if re.search(r"\bstop the statin\b", w, re.IGNORECASE)]
    changes = [w for w in words if re.search(r"\bdose\b.*\bstatin\b", w, re.IGNORECASE)]
    assert not (stops and changes), words


def test_the_plan_did_supersede_somewhere():
    """The corpus exercises the plan: a lower card lost a step to a more urgent one."""
    assert any(r.superseded_by for p in PATIENTS for r in p.results)


def test_a_result_no_record_chose_steps_for_keeps_its_unconditional_steps():
    """A route result made without a record (steps None) still gets a next step: those
    that hold whatever the record, never a conditional one."""
    # CLTI with claudication: the CLTI steps hold whatever the record; every PAD step is
    # conditional (not beside CLTI, or only without a recent ABI).
    patient = next(p for p in PATIENTS if p.label == "vignette clti_rest_pain_with_claudication")
    [result] = [r for r in patient.results if r.route.code == "vascular"]
    bare = dataclasses.replace(result, chosen=None, steps=None, superseded_by=[])
    texts = [s.text for s in steps_of(bare)]
    assert any(t.startswith("Urgent vascular surgery referral, within days") for t in texts)
    assert not any("Confirm with an ABI" in t or "supervised exercise" in t for t in texts)
    assert "**Next step**" in cards.detail_for(bare)
