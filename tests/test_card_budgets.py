"""Cards a clinician takes in at a glance (issue 13): every card of every example and shared
record keeps to the budgets, and the published Java-Synthea charts get few cards."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthea import SYNTHEA_DIR, hook_request, synthea_files  # noqa: E402
from test_real_data import EXPECTED_SHIFTED, shifted_outcome  # noqa: E402

from cds_service.config import Settings  # noqa: E402
from cds_service.protocol.fhir_json import decode_request  # noqa: E402
from cds_service.service import CdsService  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "fhir_examples"
SEVERITY = {"critical": 2, "warning": 1, "info": 0}


def every_card() -> list[tuple[str, dict]]:
    service = CdsService(Settings.from_env({}, today="2026-11-24"), fetcher=lambda *a: {})
    cards = []
    for path in sorted(EXAMPLES.glob("*.json")):
        response = service.evaluate(decode_request(path.read_bytes())).response
        cards += [(path.stem, card) for card in response["cards"]]
    for path in synthea_files():
        outcome = (
            shifted_outcome(path.name)
            if path.name in EXPECTED_SHIFTED
            else service.evaluate(hook_request(path))
        )
        cards += [(path.name, card) for card in outcome.response["cards"]]
    return cards


@pytest.fixture(scope="module")
def cards():
    if not SYNTHEA_DIR.exists():
        pytest.skip("shared/fhir-real not present")
    return every_card()


def test_every_card_keeps_to_the_budgets(cards):
    assert len(cards) > 30
    for where, card in cards:
        assert len(card["summary"]) < 100, (where, card["summary"])
        assert len(card["detail"]) <= 900, (where, card["summary"], len(card["detail"]))
        assert len(card.get("links", [])) <= 2, (where, card["summary"])


def test_median_detail_is_under_600_characters(cards):
    assert statistics.median(len(card["detail"]) for _where, card in cards) < 600


def test_cards_say_only_what_their_rules_mean(cards):
    """No route-level background on a card: it starts with the evidence."""
    for where, card in cards:
        assert card["detail"].startswith("**Evidence**"), where
        assert "The primary care clinician is the first point of contact" not in card["detail"]


def test_published_charts_get_few_cards():
    """Each Java-Synthea chart read a week after its newest entry, with a leg-cramp problem
    recorded that day: at most 1.5 cards per chart on average.

    The issue also asks for a workup card on at most half of them (5 of 10). The five that
    keep one each have a trigger the issue lists: no basic result on record for over a year
    with new cramps (Tamatha, Weston, and David, whose TSH is also years old), thyroid
    disease without TSH (Louie) and diabetes without magnesium (Clarine). Josue's only
    trigger was an implausible HbA1c beside a usable glucose; it is now shown where the
    HbA1c is used (the endocrinology card), not as a workup of its own
    (cards/primary-care-workup.yaml, `hba1c-missing`).
    """
    counts, workups = [], set()
    for name in sorted(EXPECTED_SHIFTED):
        routes = shifted_outcome(name).routes
        counts.append(len(routes))
        if "primary-care-workup" in routes:
            workups.add(name.split("_")[0])
    assert sum(counts) / len(counts) <= 1.5
    assert len(workups) <= len(counts) / 2
    assert workups == {"Tamatha", "Weston", "David", "Louie", "Clarine"}


def test_summary_leads_with_the_most_severe_finding():
    service = CdsService(Settings.from_env({}, today="2026-11-24"), fetcher=lambda *a: {})
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from routes_helpers import hook_request as build  # noqa: PLC0415
    from routes_helpers import observation

    request = build(observation("2823-3", 2.9, "mmol/L", 5))  # low K, nothing else measured
    [card] = [
        c
        for c in service.evaluate(request).response["cards"]
        if c["source"]["topic"]["code"] == "primary-care-workup"
    ]
    assert card["summary"].startswith("Primary care workup: Potassium 2.9 mmol/L")
