"""The README's worked example, run: a new criterion type is one class and one schema entry.

``condition-count`` holds when at least ``at_least`` different coded problems of its value
sets are active (for example "two or more risk factors"). Its facts are the problems'
facts, so the card words them as any coded problem; nothing else in the service changes.
"""

from __future__ import annotations

import copy
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routes_helpers import TODAY, condition, cramp, hook_request, normal_workup  # noqa: E402

from cds_service.config import Settings  # noqa: E402
from cds_service.engine import RuleError, loader  # noqa: E402
from cds_service.engine.criteria import TYPES, Definitions  # noqa: E402
from cds_service.engine.criteria.coded import ConditionCriterion  # noqa: E402
from cds_service.service import CdsService  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# --- the class (in the service it would go in engine/criteria/coded.py) -----------------
@dataclass
class ConditionCount(ConditionCriterion):
    """At least ``at_least`` different active problems of the value sets."""

    type_name = "condition-count"

    at_least: int

    @classmethod
    def own_fields(cls, spec: dict, defs: Definitions, where: str) -> dict[str, Any]:
        return {**super().own_fields(spec, defs, where), "at_least": spec["at_least"]}

    def evaluate(self, ev) -> list:
        facts = super().evaluate(ev)  # one per problem already (the newest entry of each)
        return facts if len(facts) >= self.at_least else []


# --- the schema entry (in the service: cds_service/schemas/rules-route.json) -------------
SCHEMA_ENTRY = {
    "if": {"required": ["type"], "properties": {"type": {"const": "condition-count"}}},
    "then": {
        "required": ["value_sets", "at_least"],
        "properties": {
            "value_sets": {"type": "array", "minItems": 1},
            "at_least": {"type": "integer", "minimum": 2},
            "lookback_days": {"type": "integer", "minimum": 1},
        },
    },
}

RULE = {
    "id": "two-kidney-problems",
    "type": "condition-count",
    "value_sets": ["ckd-any", "electrolyte-disorders"],
    "at_least": 2,
    "content": "ckd-electrolytes",
}


def _cards_with_the_rule(tmp_path: Path) -> Path:
    """A copy of the shipped rules with the new rule added to nephrology.yaml."""
    cards = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", cards)
    path = cards / "nephrology.yaml"
    data = yaml.safe_load(path.read_text())
    data["criteria"].append(RULE)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return cards


@pytest.fixture
def extended(tmp_path, monkeypatch):
    """The shipped rules plus the new rule in nephrology.yaml, with the schema entry."""
    shipped = loader.schema
    schema = copy.deepcopy(shipped("rules-route.json"))
    item = schema["properties"]["criteria"]["items"]
    item["properties"]["type"]["enum"].append("condition-count")
    item["allOf"].append(SCHEMA_ENTRY)
    monkeypatch.setattr(
        loader, "schema", lambda name: schema if name == "rules-route.json" else shipped(name)
    )
    cards = _cards_with_the_rule(tmp_path)
    settings = Settings.from_env({"CDS_CARDS_DIR": str(cards)}, today=TODAY.isoformat())
    return CdsService(settings, fetcher=lambda *a: {})


def _nephrology(service, *resources):
    cards = service.evaluate(hook_request(cramp(), *resources, *normal_workup())).response
    return [c for c in cards["cards"] if c["source"]["topic"]["code"] == "nephrology"]


def test_the_new_type_is_registered_by_its_class():
    assert TYPES["condition-count"] is ConditionCount


def test_the_new_rule_fires_with_two_problems_and_not_with_one(extended):
    ckd2, hypokalemia = condition("431856006"), condition("43339004")  # CKD stage 2, low K
    (card,) = _nephrology(extended, ckd2, hypokalemia)
    assert "Chronic kidney disease stage 2" in card["detail"]
    assert "Hypokalemia" in card["detail"]
    assert _nephrology(extended, ckd2) == []
    stock = CdsService(Settings.from_env({}, today=TODAY.isoformat()), fetcher=lambda *a: {})
    assert _nephrology(stock, ckd2, hypokalemia) == [], "the new rule is what fires"


def test_without_its_schema_entry_the_rule_file_is_refused(tmp_path):
    cards = _cards_with_the_rule(tmp_path)
    with pytest.raises(RuleError, match="nephrology.yaml: field criteria"):
        loader.load(cards)
