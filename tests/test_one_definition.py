"""One definition per clinical concept (issue 21): a criterion two routes read is defined once,
in cards/shared/, and each route uses it by id; check-rules refuses a second definition."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from cds_service.engine import loader
from cds_service.engine.model import RuleError
from cds_service.engine.route_loader import ROUTE_LOCAL_KEYS

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routes_helpers import cards_of, normal_workup, observation  # noqa: E402
from rule_files import copy_cards, edit_yaml, refused  # noqa: E402

CARDS = Path(__file__).resolve().parents[1] / "cards"
SHARED_FILE = CARDS / "shared" / "criteria.yaml"
# The ids issue 21 found defined in more than one route file.
ONCE_DUPLICATED = [
    "tsh-suppressed",
    "diabetes",
    "on-thyroid-hormone",
    "tsh-above-10",
    "hypothyroidism",
    "ckd-stage-3-plus",
    "potassium-low",
    "potassium-high",
    "magnesium-low",
    "sodium-low",
    "electrolyte-disorder-coded",
    "potassium-critical-low",
    "potassium-critical-high",
    "magnesium-critical-low",
    "sodium-critical-low",
    "calcium-critical-low",
    "calcium-corrected-critical-low",
    "lead-urgent-level-adult",
    "lead-urgent-level-child",
]
CRITICAL = [i for i in ONCE_DUPLICATED if "critical" in i]


def _definitions() -> Counter[str]:
    """How many times each criterion id is defined (not used) in cards/."""
    counts: Counter[str] = Counter()
    for path in [*CARDS.glob("*.yaml"), *(CARDS / "shared").glob("*.yaml")]:
        data = yaml.safe_load(path.read_text())
        for section in ("criteria", "building_blocks"):
            counts.update(entry["id"] for entry in data.get(section) or [] if "id" in entry)
    return counts


def test_no_criterion_id_is_defined_twice_in_the_shipped_cards():
    counts = _definitions()
    assert [i for i, n in counts.items() if n > 1] == []
    assert len(counts) > 100  # every route's criteria were read


def test_the_concepts_defined_twice_before_are_shared_and_used_by_id():
    shared = {e["id"] for e in yaml.safe_load(SHARED_FILE.read_text())["criteria"]}
    assert set(ONCE_DUPLICATED) <= shared
    ruleset = loader.load(CARDS)
    users = Counter(i for route in ruleset.routes for i in route.shared)
    assert set(users) == shared
    assert all(n >= 2 for n in users.values()), "a definition one route reads belongs there"


def test_what_a_route_may_add_is_the_same_in_the_loader_and_both_schemas():
    route_schema = loader.schema("rules-route.json")
    assert set(route_schema["$defs"]["use"]["properties"]) == {"use", *ROUTE_LOCAL_KEYS}
    forbidden = loader.schema("rules-shared.json")["properties"]["criteria"]["items"]
    assert set(ROUTE_LOCAL_KEYS) <= {
        k for k, v in forbidden["properties"].items() if v["not"] == {}
    }


def test_every_route_compiles_a_shared_criterion_exactly_as_defined():
    """What a route adds is only its own part: content, indicator, unless, evidence."""
    ruleset = loader.load(CARDS)
    for route in ruleset.routes:
        for criterion_id in route.shared:
            spec = route.criteria[criterion_id].spec
            definition = ruleset.shared_criteria[criterion_id].spec
            own = {k: v for k, v in spec.items() if k not in ROUTE_LOCAL_KEYS}
            assert own == definition, (route.code, criterion_id)


@pytest.mark.parametrize("criterion_id", CRITICAL)
def test_the_workup_reads_the_critical_bands_with_urgent_cares_critical_flags(criterion_id):
    """Reconciled with the safer copy: primary-care-workup.yaml's copies had no flags."""
    ruleset = loader.load(CARDS)
    routes = {route.code: route for route in ruleset.routes}
    urgent = routes["urgent-care"].criteria[criterion_id]
    workup = routes["primary-care-workup"].criteria[criterion_id]
    assert (
        urgent.spec["critical_flags"]
        and workup.spec["critical_flags"] == urgent.spec["critical_flags"]
    )
    assert urgent.fires and not workup.fires


def test_the_fired_rule_id_is_the_shared_id():
    """Rule ids are recorded with cards and feedback: using a definition keeps its id."""
    cards = cards_of(observation("2823-3", 2.3, "mmol/L", 1), *normal_workup())
    urgent = cards["urgent-care"]
    assert any("rules=potassium-critical-low" in link["url"] for link in urgent["links"])
    assert "primary-care-workup" not in cards  # the critical value is urgent care's alone


# ------------------------------------------------------------------- check-rules refuses


def _position(data: dict, section: str, **match) -> int:
    entries = data[section]
    return next(i for i, e in enumerate(entries) if match.items() <= e.items())


def test_a_route_redefining_a_shared_id_is_refused(tmp_path, capsys):
    cards = copy_cards(tmp_path)
    path = cards / "nephrology.yaml"
    data = yaml.safe_load(path.read_text())
    i = _position(data, "building_blocks", use="potassium-low")
    data["building_blocks"][i] = {
        "id": "potassium-low",
        "type": "observation",
        "concept": "potassium",
        "threshold": {"comparator": "<", "value": 3.0, "unit": "mmol/L"},
        "lookback_days": 90,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    err = refused(cards, capsys)
    assert f"nephrology.yaml: field building_blocks/{i}/id" in err
    assert "shared/criteria.yaml" in err and "use: potassium-low" in err


def test_the_same_id_in_two_route_files_is_refused(tmp_path, capsys):
    cards = copy_cards(tmp_path)
    block = {"id": "statin-on-record", "type": "medication", "classes": ["statin"]}
    for name in ("vascular.yaml", "neurology.yaml"):
        edit_yaml(cards / name, lambda d: d.setdefault("building_blocks", []).append(dict(block)))
    err = refused(cards, capsys)
    assert "'statin-on-record' is already defined in" in err
    assert "neurology.yaml: field building_blocks/" in err and "vascular.yaml" in err


def test_the_same_id_twice_in_one_file_is_refused(tmp_path, capsys):
    cards = copy_cards(tmp_path)
    edit_yaml(
        cards / "nephrology.yaml", lambda d: d["building_blocks"].append({"use": "sodium-low"})
    )
    err = refused(cards, capsys)
    assert "nephrology.yaml: field building_blocks/" in err and "duplicate id 'sodium-low'" in err


def test_an_id_defined_twice_in_cards_shared_is_refused(tmp_path, capsys):
    cards = copy_cards(tmp_path)
    extra = {"criteria": [{"id": "diabetes", "type": "condition", "value_sets": ["diabetes"]}]}
    (cards / "shared" / "more.yaml").write_text(yaml.safe_dump(extra))
    err = refused(cards, capsys)
    assert "shared/more.yaml: field criteria/0/id: 'diabetes' is already defined" in err


def test_an_unknown_shared_id_is_refused(tmp_path, capsys):
    cards = copy_cards(tmp_path)
    edit_yaml(cards / "nephrology.yaml", lambda d: d["building_blocks"].append({"use": "kidney-x"}))
    err = refused(cards, capsys)
    assert "nephrology.yaml: field building_blocks/" in err
    assert "unknown shared criterion 'kidney-x'" in err


def test_a_use_may_add_only_the_routes_own_keys(tmp_path, capsys):
    cards = copy_cards(tmp_path)
    path = cards / "nephrology.yaml"
    data = yaml.safe_load(path.read_text())
    i = _position(data, "building_blocks", use="potassium-low")
    data["building_blocks"][i]["lookback_days"] = 30  # a different window is another concept
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    err = refused(cards, capsys)
    assert f"nephrology.yaml: field building_blocks/{i}" in err and "lookback_days" in err


@pytest.mark.parametrize(
    "key, value",
    [("content", "electrolyte-critical"), ("unless", ["diabetes"]), ("indicator", "critical")],
)
def test_a_shared_definition_holds_no_route_part(tmp_path, capsys, key, value):
    cards = copy_cards(tmp_path)
    edit_yaml(cards / "shared" / "criteria.yaml", lambda d: d["criteria"][0].update({key: value}))
    err = refused(cards, capsys)
    assert f"criteria.yaml: field criteria/0/{key}" in err


def test_a_shared_definition_is_checked_against_the_shared_names(tmp_path):
    cards = copy_cards(tmp_path)
    edit_yaml(
        cards / "shared" / "criteria.yaml", lambda d: d["criteria"][0].update(concept="kalium")
    )
    with pytest.raises(RuleError, match="shared/criteria.yaml: field criteria/0.*'kalium'"):
        loader.load(cards)
