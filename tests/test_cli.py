"""The command line: evaluate a request file, check the rule files, reject bad ones."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from cds_service.cli import main
from cds_service.config import Settings
from cds_service.engine import RuleError
from cds_service.protocol.hooks import validator
from cds_service.web.app import create_app

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
            lambda d: d["building_blocks"][0].update(
                threshold={"comparator": "<", "value": 30, "unit": "furlongs"}
            ),
            "building_blocks/0/threshold/unit",
        ),
        (
            lambda d: d["criteria"].append({"id": "x", "type": "all", "of": ["missing-id"]}),
            "criteria/",
        ),
        (lambda d: d.update(indicator="urgent"), "indicator"),
        # The old rule language is refused, not silently read another way.
        (lambda d: d["building_blocks"][0].update(fires=False), "building_blocks/0/fires"),
        (lambda d: d["criteria"][0].update(recent_days=30), "criteria/0/recent_days"),
        (lambda d: d["criteria"][0].update(when="egfr-below-30"), "criteria/0"),
        (
            lambda d: d["variants"][1].update(precedence=d["variants"][0]["precedence"]),
            "same precedence",
        ),
        (
            lambda d: d["building_blocks"].extend(
                [
                    {"id": "a", "type": "any", "of": ["b"]},
                    {"id": "b", "type": "all", "of": ["a"]},
                ]
            ),
            "a -> b -> a",
        ),
        (
            lambda d: d["criteria"].append({"id": "c", "type": "any", "of": ["ckd-stage-4-5"]}),
            "needs its next step",
        ),
        (lambda d: d["criteria"][0].pop("value_sets"), "criteria/0"),
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


# -- evaluate applies suppressions when a store is configured (issue 13) -------------------

NEPHROLOGY = ROOT / "fhir_examples" / "nephrology-egfr-22.json"


def overridden(card: dict, reason: str) -> dict:
    """A feedback item: ``card`` overridden now, with one of our override reasons."""
    return {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "overrideReason": {
            "reason": {"system": "urn:leg-cramp-cds:override-reason", "code": reason}
        },
    }


def _override_in_a_store(tmp_path: Path, patient: str | None = None) -> None:
    """A service on tmp_path/data issues the nephrology card and it is overridden with a
    suppressing reason."""
    settings = Settings.from_env(
        {},
        today="2026-11-24",
        data_dir=tmp_path / "data",
        patient_hash_salt="cli-secret",
        suppression_without_auth=True,  # no JWT clients here
    )
    app = create_app(settings)
    try:
        client = app.test_client()
        request = json.loads(NEPHROLOGY.read_text())
        [card] = [
            c
            for c in client.post("/cds-services/leg-cramp-referral", json=request).get_json()[
                "cards"
            ]
            if c["source"]["topic"]["code"] == "nephrology"
        ]
        assert app.extensions["cds_store"].flush()
        item = overridden(card, "patient-declined")
        response = client.post(
            "/cds-services/leg-cramp-referral/feedback", json={"feedback": [item]}
        )
        assert response.status_code == 200
    finally:
        app.extensions["cds_store"].close()


def _evaluate(capsys, path: Path, *extra: str) -> tuple[set[str], str]:
    assert main(["evaluate", str(path), *extra]) == 0
    captured = capsys.readouterr()
    routes = {c["source"]["topic"]["code"] for c in json.loads(captured.out)["cards"]}
    return routes, captured.err


def test_evaluate_leaves_out_suppressed_cards_and_says_so(tmp_path, capsys, monkeypatch):
    _override_in_a_store(tmp_path)
    monkeypatch.setenv("CDS_TODAY", "2026-11-24")
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CDS_PATIENT_HASH_SALT", "cli-secret")
    monkeypatch.setenv("CDS_SUPPRESSION_WITHOUT_AUTH", "true")
    routes, err = _evaluate(capsys, NEPHROLOGY)
    assert "nephrology" not in routes
    assert "suppressed by an earlier override: nephrology (rules " in err
    patient = json.loads(NEPHROLOGY.read_text())["context"]["patientId"]
    assert patient not in err and "eGFR" not in err  # route and rule ids only
    # Near misses: another patient, and --no-suppressions, get the card and no message.
    other = tmp_path / "other.json"
    other.write_text(NEPHROLOGY.read_text().replace(patient, "someone-else"))
    for path, extra in ((other, ()), (NEPHROLOGY, ("--no-suppressions",))):
        routes, err = _evaluate(capsys, path, *extra)
        assert "nephrology" in routes and "suppressed" not in err


def test_evaluate_without_a_store_creates_none(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CDS_TODAY", "2026-11-24")
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path / "data"))
    routes, err = _evaluate(capsys, NEPHROLOGY)
    assert "nephrology" in routes and "suppressed" not in err
    assert not (tmp_path / "data").exists()


# -- help a new user reads first (issue 24) -------------------------------------------------


def _help(*argv: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "cds_service", *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_is_plain_text_and_lists_every_command():
    text = _help()
    assert "``" not in text and ":func:" not in text
    commands = ("serve", "evaluate", "check-rules", "report", "example")
    listed = [line.split()[0] for line in text.splitlines() if line.startswith("    ")]
    assert set(commands) <= set(listed), listed
    for command in commands:  # each has help of its own
        assert "``" not in _help(command)


def test_serve_options_are_explained():
    text = _help("serve")
    assert "--host HOST  listen address" in text and "CDS_HOST" in text
    assert "--port PORT  listen port" in text and "CDS_PORT" in text


def test_evaluate_reads_stdin(monkeypatch, capsys):
    import io

    monkeypatch.setenv("CDS_TODAY", "2026-11-24")
    monkeypatch.setattr(sys, "stdin", io.StringIO(EXAMPLE.read_text()))
    assert main(["evaluate", "-"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["cards"][0]["source"]["topic"]["code"] == "nephrology"
