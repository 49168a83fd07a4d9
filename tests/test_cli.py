"""The command line: evaluate a request file, check the rule files, reject bad ones."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cds_service.app import create_app
from cds_service.cli import main
from cds_service.config import Settings
from cds_service.engine import RuleError
from cds_service.hooks import validator

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "fhir_examples" / "nephrology-ckd-stage-4.json"


def test_evaluate_prints_a_schema_valid_response(capsys, monkeypatch):
    monkeypatch.setenv("CDS_TODAY", "2026-11-24")
    assert main(["evaluate", str(EXAMPLE)]) == 0
    body = json.loads(capsys.readouterr().out)
    validator("cds-response").validate(body)
    assert body["cards"][0]["source"]["topic"]["code"] == "nephrology"


def test_evaluate_reports_a_bad_request_as_operation_outcome(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hook": "patient-view"}))
    assert main(["evaluate", str(bad)]) == 1
    assert json.loads(capsys.readouterr().out)["resourceType"] == "OperationOutcome"


def test_check_rules_accepts_the_shipped_cards(capsys):
    assert main(["check-rules"]) == 0
    assert "OK" in capsys.readouterr().out


def test_python_dash_m_works():
    result = subprocess.run(
        [sys.executable, "-m", "cds_service", "check-rules"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def _broken_cards(tmp_path: Path, edit) -> Path:
    cards = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", cards)
    path = cards / "nephrology.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return cards


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d.pop("summary"), "summary"),
        (lambda d: d["criteria"][0].update(value_sets=["no-such-set"]), "criteria/0/value_sets"),
        (
            lambda d: d["criteria"][4]["threshold"].update(unit="furlongs"),
            "criteria/4/threshold/unit",
        ),
        (
            lambda d: d["criteria"].append({"id": "x", "type": "all", "of": ["missing-id"]}),
            "criteria/",
        ),
        (lambda d: d.update(indicator="urgent"), "indicator"),
        (
            lambda d: d["criteria"].extend(
                [
                    {"id": "a", "type": "any", "of": ["b"], "fires": False},
                    {"id": "b", "type": "all", "of": ["a"], "fires": False},
                ]
            ),
            "a -> b -> a",
        ),
        (
            lambda d: d["criteria"].append({"id": "c", "type": "any", "of": ["ckd-stage-4-5"]}),
            "needs its next step",
        ),
        (lambda d: d["criteria"][2].pop("lookback_days"), "criteria/2"),
    ],
)
def test_check_rules_names_file_and_field(tmp_path, capsys, edit, expected):
    cards = _broken_cards(tmp_path, edit)
    assert main(["check-rules", "--cards-dir", str(cards)]) == 1
    err = capsys.readouterr().err
    assert "nephrology.yaml" in err and expected in err


def test_start_up_rejects_a_bad_rule_file(tmp_path):
    cards = _broken_cards(tmp_path, lambda d: d.pop("criteria"))
    with pytest.raises(RuleError, match="nephrology.yaml"):
        create_app(Settings.from_env({}, cards_dir=cards, data_dir=tmp_path))


def test_invalid_yaml_is_reported(tmp_path, capsys):
    cards = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", cards)
    (cards / "nephrology.yaml").write_text("route: [unclosed\n")
    assert main(["check-rules", "--cards-dir", str(cards)]) == 1
    assert "nephrology.yaml" in capsys.readouterr().err
