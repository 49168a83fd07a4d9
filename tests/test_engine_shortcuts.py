"""The engine's shortcuts give the answers of the plain computation they replace.

``evaluation.reachable`` (which criteria can hold, per route and kind of record), the
tie-only passes of ``results._order_ties`` and ``evaluation._order_facts``, the facts'
remembered wording and references, and the answers shared between routes of one record.
The golden cards check the whole; these check each shortcut against its plain version.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from cds_service.config import Settings
from cds_service.engine import load_rules
from cds_service.engine import record as record_module
from cds_service.engine.evaluation import (
    _order_facts,
    evaluate,
    reachable,
    shown_reachable,
)
from cds_service.engine.facts import CodedProblem, Fact
from cds_service.engine.record import Record
from cds_service.engine.results import _order_ties
from cds_service.engine.terminology import LOINC, SNOMED, Concept
from cds_service.render import evidence

NOW = datetime(2026, 11, 24, tzinfo=UTC)


@pytest.fixture(scope="module")
def ruleset():
    return load_rules(Settings.from_env({}).cards_dir)


def _possible(route, present, criterion_id: str) -> bool:
    """The needs walked on every check, as the engine did before ``reachable``."""
    need = route.needs[criterion_id]
    if need.kind == "data":
        return not present.isdisjoint(need.data)
    if need.kind == "always":
        return True
    parts = [_possible(route, present, part) for part in need.parts]
    return all(parts) if need.kind == "all" else any(parts)


def test_reachable_is_the_needs_walked_criterion_by_criterion(ruleset):
    rng = random.Random(14)
    every = sorted(
        {p for route in ruleset.routes for p in route.presences},
        key=lambda p: (p[0], p[1].name if p[1] else ""),
    )
    samples = [frozenset(), frozenset(every)] + [
        frozenset(rng.sample(every, rng.randint(1, len(every)))) for _ in range(40)
    ]
    for present in samples:
        for route in ruleset.routes:
            expected = {c for c in route.needs if _possible(route, present, c)}
            assert reachable(route, present & route.presences) == expected, route.code


def _dated(stamp: float, rid: str, code: Concept):
    when = datetime.fromtimestamp(stamp, UTC)
    return (stamp, when, {"resourceType": "Observation", "id": rid}, code)


def test_results_of_one_instant_are_ordered_as_the_full_sort_orders_them(ruleset):
    concept = ruleset.concepts["potassium"]
    codes = list(concept.value_set.exact.values())
    other = Concept(LOINC, "0000-0", "not a member")  # ranks after every member
    rank = concept.value_set.rank
    rng = random.Random(7)
    for _ in range(200):
        dated = [
            _dated(
                float(rng.choice([1, 2, 3, 4])),
                rng.choice(["a", "b", "c", "10", "9"]),
                rng.choice(codes + [other]),
            )
            for _ in range(rng.randint(0, 9))
        ]
        expected = sorted(
            dated,
            key=lambda r: (-r[0], rank.get((r[3].system, r[3].code), len(rank)), str(r[2]["id"])),
        )
        dated.sort(key=lambda r: r[0], reverse=True)
        _order_ties(dated, concept)
        assert [id(r) for r in dated] == [id(r) for r in expected]


def _problem(display: str, day: int | None, status: str = "active") -> Fact:
    when = NOW - timedelta(days=day) if day is not None else None
    code = Concept(SNOMED, str(abs(hash(display)) % 10**8), display)
    evidence = CodedProblem(code, status, when, None)
    return Fact("c", evidence, (), when)


def test_facts_are_ordered_as_sorting_on_when_name_and_evidence_orders_them():
    rng = random.Random(3)
    for _ in range(200):
        found = [
            _problem(
                rng.choice(["Gout", "Asthma", "Anemia"]),
                rng.choice([None, 1, 2]),
                rng.choice(["active", "recurrence", "relapse"]),
            )
            for _ in range(rng.randint(0, 8))
        ]
        expected = sorted(
            found,
            key=lambda f: (
                -f.when.timestamp() if f.when else float("inf"),
                f.name,
                repr(f.evidence),
            ),
        )
        _order_facts(found)
        assert [id(f) for f in found] == [id(f) for f in expected]


def test_a_hidden_copy_and_the_remembered_wording_are_those_of_the_fact():
    fact = _problem("Gout", 3)
    assert fact.as_hidden() == replace(fact, hidden=True)
    assert fact.as_hidden().hidden and not fact.hidden
    first = evidence.text(fact)
    assert first == evidence._text(fact.evidence)
    assert evidence.text(fact) is first  # worded once
    assert fact == _problem("Gout", 3)  # the wording takes no part in equality


def _chart(medications: list[dict]) -> list[dict]:
    subject = {"reference": "Patient/p1"}
    cramps = {
        "resourceType": "Condition",
        "id": "cramps",
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "R25.2"}]},
        "onsetDateTime": "2026-11-01",
        "subject": subject,
    }
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950"}
    return [patient, cramps, *medications]


def test_routes_of_one_record_classify_its_medications_once_per_classifier(ruleset, monkeypatch):
    from cds_service.engine import evaluation

    order = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"text": "furosemide 40 mg tablet"},
        "authoredOn": "2026-10-01",
    }
    calls: list[int] = []
    original = evaluation.active_medications

    def counted(ev):
        calls.append(id(ev.route.medications))
        return original(ev)

    monkeypatch.setattr(evaluation, "active_medications", counted)
    record = Record("p1", _chart([order]), NOW, ruleset.codes)
    results = evaluate(ruleset, record)
    assert results  # the loop diuretic makes a card
    readers = [
        route
        for route in ruleset.routes
        if any(type(c).__name__ == "MedicationCriterion" for c in route.criteria.values())
    ]
    shared = {id(r.medications) for r in readers}
    assert len(readers) > len(shared)  # routes do share a classifier: the memo matters
    assert calls and len(calls) == len(set(calls))  # classified once per classifier
    fresh = Record("p1", _chart([order]), NOW, ruleset.codes)
    assert fresh.memo == {}  # a fresh record (a new call) starts with nothing remembered


def test_the_memo_forgets_what_rests_on_a_resource_found_invalid(ruleset):
    """No answer is keyed on a counter: finding an invalid resource clears the call's memo,
    so the next question is answered again without it."""
    bad = {
        "resourceType": "Observation",
        "id": "k",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}], "text": 5},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-11-20",
        "valueQuantity": {"value": 2.3, "unit": "mmol/L", "code": "mmol/L"},
    }
    record = Record("p1", _chart([bad]), NOW, ruleset.codes)
    potassium = ruleset.concepts["potassium"]
    statuses = frozenset({"final"})
    assert [r[2] for r in record.labs.newest_results(potassium, statuses)] == [bad]
    assert record.memo
    assert not record.is_valid(bad)  # the code's text must be a string (R4B)
    assert record.memo == {}
    assert record.labs.newest_results(potassium, statuses) == []


def test_shown_reachable_is_the_shown_criteria_that_can_hold_in_file_order(ruleset):
    """``Evaluation`` walks only these: every other shown criterion is settled unrun."""
    every = sorted(
        {p for route in ruleset.routes for p in route.presences},
        key=lambda p: (p[0], p[1].name if p[1] else ""),
    )
    rng = random.Random(15)
    for present in [frozenset(), frozenset(every)] + [
        frozenset(rng.sample(every, rng.randint(1, len(every)))) for _ in range(20)
    ]:
        for route in ruleset.routes:
            cut = present & route.presences
            can_hold = reachable(route, cut)
            expected = [(i, c) for i, c in enumerate(route.shown) if c.id in can_hold]
            assert list(shown_reachable(route, cut)) == expected, route.code


def test_the_code_memo_answers_as_the_value_sets_do_and_stays_bounded(ruleset, monkeypatch):
    """``Record._index`` reads ``CodeIndex.memo`` directly: what it holds must be what
    ``owners`` computes, odd codings (not strings, too long) are never kept, and it starts
    afresh when full instead of growing with every code a chart carries."""
    codes = ruleset.codes
    codes.memo.clear()
    member = next(iter(ruleset.concepts["potassium"].value_set.exact.values()))
    raw = ("http://loinc.org", member.code)
    assert codes.owners(*raw) == codes._owners_of_raw(*raw) != ()
    assert codes.memo[raw] == codes.owners(*raw)
    assert codes.owners(["not", "a string"], member.code) == ()
    assert codes.owners(raw[0], "9" * 300) == ()
    assert list(codes.memo) == [raw]
    monkeypatch.setattr(type(codes), "MEMO_SIZE", 3)
    for i in range(7):
        codes.owners("http://loinc.org", f"{i}-0")
    assert 1 <= len(codes.memo) <= 3
    codes.memo.clear()


def test_a_record_indexed_through_the_memo_files_resources_as_owners_does(ruleset):
    """The same value sets for each resource with a warm memo, a cold one, and odd codings
    (a list as a code is looked up without being hashed)."""
    potassium = next(iter(ruleset.concepts["potassium"].value_set.exact.values()))
    resources = [
        {
            "resourceType": "Observation",
            "id": "k",
            "code": {"coding": [{"system": "http://loinc.org", "code": potassium.code}]},
        },
        {
            "resourceType": "Observation",
            "id": "odd",
            "code": {"coding": [{"system": "http://loinc.org", "code": ["2823-3"]}]},
        },
        {
            "resourceType": "Observation",
            "id": "none",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        },
        {
            "resourceType": "Observation",
            "id": "two",
            "code": {
                "coding": [
                    {"system": "http://loinc.org", "code": "8302-2"},
                    {"system": "http://loinc.org", "code": potassium.code},
                ]
            },
        },
        {"resourceType": "Observation", "id": "nosystem", "code": {"coding": [{"code": "x"}]}},
        {"resourceType": "Observation", "id": "notalist", "code": {"coding": {"0": {}}}},
        {"resourceType": "Observation", "id": "strcoding", "code": {"coding": ["x"]}},
        {"resourceType": "Observation", "id": "nocode"},
        {"resourceType": "Observation", "id": "strcode", "code": "2823-3"},
    ]

    def filed(record: Record) -> dict:
        index = record._index("Observation")
        return {vs.name: [r["id"] for r, _ in found] for vs, found in index.items()}

    ruleset.codes.memo.clear()
    cold = filed(Record("p", resources, NOW, ruleset.codes))
    warm = filed(Record("p", resources, NOW, ruleset.codes))
    assert cold == warm
    assert all(ids == ["k", "two"] for ids in cold.values()) and cold


def test_resources_are_grouped_by_type_in_order_whatever_their_kind():
    """Runs of one type are filed at once; decoded nodes and plain dicts alike, and a
    resource whose type is not a string is left out."""
    from cds_service.protocol.fhir_json import ConditionNode

    nodes = [ConditionNode(id=str(i)) for i in range(3)]
    dicts = [{"resourceType": "Observation", "id": "o1"}, {"resourceType": 5, "id": "bad"}]
    mixed = [nodes[0], dicts[0], nodes[1], dicts[1], {"id": "untyped"}, nodes[2], dicts[0]]
    for resources in (nodes, mixed, iter(mixed)):
        received: dict = {}
        record_module._group_by_type(resources, received)
        expected: dict = {}
        for r in resources if isinstance(resources, list) else mixed:
            rtype = r.get("resourceType")
            if isinstance(rtype, str):
                expected.setdefault(rtype, []).append(r)
        assert received == expected
