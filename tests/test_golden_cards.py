"""Cards stay identical (uuids aside) across engine changes, for every example and every shared
record: an intended change rewrites tests/golden/cards.json (``python tests/golden_cards.py``)
and the diff of that file shows, card by card, what changed."""

from __future__ import annotations

import json

import pytest
from golden_cards import GOLDEN, available, current

pytestmark = pytest.mark.skipif(not available(), reason="shared/fhir-real not present")


def test_cards_are_as_recorded_for_every_example_and_shared_record():
    recorded = json.loads(GOLDEN.read_text())
    now = current()
    assert sorted(now) == sorted(recorded)
    changed = [name for name in now if now[name] != recorded[name]]
    assert not changed, (
        f"cards changed for {changed}: run python tests/golden_cards.py and review the diff"
    )
