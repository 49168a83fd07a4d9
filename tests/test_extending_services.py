"""Adding a CDS service is one declaration and its rule files (README, "Extending: another
CDS service"). The worked example, run here: a loop-diuretic check on order-select, with its
own check file, reusing the shared potassium and magnesium criteria and the medication
classes by name. Discovery, the OpenAPI document, validation, the HTTP routes, feedback and
the command line all pick it up from the declaration alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cds_service.cli import main
from cds_service.config import Settings
from cds_service.protocol import services
from cds_service.protocol.services import ORDERS, Service
from cds_service.web.app import create_app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "fhir_examples" / "order-sign-thiazide-low-potassium.json"

# The declaration (README: add it to SERVICES in cds_service/protocol/services.py).
DIURETIC_CHECK = Service(
    id="leg-cramp-diuretic-check",
    hook="order-select",
    title="Leg cramp loop-diuretic check",
    description="Checks a loop diuretic being selected against the patient's electrolytes.",
    context=("userId", "patientId", "selections", "draftOrders"),
    rules=ORDERS,
    rule_files="diuretic-checks/*.yaml",
)
# Its rule file (README: cards/diuretic-checks/loop-diuretics.yaml).
RULE_FILE = """\
hooks: [order-select]
medication_checks:
  - id: loop-diuretic-with-low-electrolyte
    classes: [loop-diuretic]
    when_any: [potassium-low, magnesium-low]
    topic: {code: medication-review, display: Medication review}
    indicator: warning
    summary: "{medicine} selected with {finding}"
    next_step: >-
      Loop diuretics lower potassium and magnesium: correct the deficit and recheck the
      electrolytes within a week of starting.
"""


@pytest.fixture
def extended(tmp_path, monkeypatch):
    """The shipped rules plus the new file, and the new declaration among the services."""
    cards = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", cards)
    (cards / "diuretic-checks").mkdir()
    (cards / "diuretic-checks" / "loop-diuretics.yaml").write_text(RULE_FILE)
    monkeypatch.setattr(services, "SERVICES", (*services.SERVICES, DIURETIC_CHECK))
    monkeypatch.setenv("CDS_CARDS_DIR", str(cards))
    monkeypatch.setenv("CDS_TODAY", "2026-11-24")
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path / "data"))
    return Settings.from_env()


def furosemide_request(hook: str = "order-select") -> dict:
    """The thiazide example's chart (potassium 3.1 mmol/L) with furosemide selected."""
    request = json.loads(EXAMPLE.read_text())
    request["hook"] = hook
    draft = request["context"]["draftOrders"]["entry"][0]["resource"]
    draft["id"] = "request-123"
    draft["medicationCodeableConcept"] = {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "310429",
                "display": "furosemide 20 MG Oral Tablet",
            }
        ],
        "text": "furosemide 20 MG Oral Tablet",
    }
    request["context"]["selections"] = ["MedicationRequest/request-123"]
    return request


def test_one_declaration_and_one_rule_file_make_a_service(extended):
    app = create_app(extended)
    client = app.test_client()
    try:
        listed = client.get("/cds-services").get_json()["services"]
        assert [s["id"] for s in listed][-1] == "leg-cramp-diuretic-check"
        document = client.get("/openapi.json").get_json()
        post = document["paths"]["/cds-services/leg-cramp-diuretic-check"]["post"]
        assert post["operationId"] == "callHook_leg_cramp_diuretic_check"
        answer = client.post("/cds-services/leg-cramp-diuretic-check", json=furosemide_request())
        assert answer.status_code == 200, answer.get_data(as_text=True)
        (card,) = answer.get_json()["cards"]
        assert card["summary"].startswith("furosemide 20 MG Oral Tablet selected with Potassium")
        # The built-in order-select service does not run the new file's check.
        builtin = client.post("/cds-services/leg-cramp-order-select", json=furosemide_request())
        assert builtin.get_json()["cards"] == []
        # The other hook is refused, naming the field; feedback has its endpoint.
        wrong = client.post(
            "/cds-services/leg-cramp-diuretic-check", json=furosemide_request("order-sign")
        )
        assert wrong.status_code == 400 and "$.hook" in wrong.get_data(as_text=True)
        item = {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-24T10:00:00Z",
            "overrideReason": {"userComment": "potassium replaced already"},
        }
        sent = client.post(
            "/cds-services/leg-cramp-diuretic-check/feedback", json={"feedback": [item]}
        )
        assert sent.status_code == 200
    finally:
        app.extensions["cds_store"].close()


def test_the_command_line_calls_the_new_service(extended, tmp_path, capsys):
    path = tmp_path / "request.json"
    path.write_text(json.dumps(furosemide_request()))
    assert main(["check-rules"]) == 0
    assert "loop-diuretic-with-low-electrolyte" in capsys.readouterr().out
    argv = ["evaluate", "--no-suppressions", "--service", "leg-cramp-diuretic-check", str(path)]
    assert main(argv) == 0
    (card,) = json.loads(capsys.readouterr().out)["cards"]
    assert card["source"]["topic"]["code"] == "medication-review"


def test_a_wrong_rule_file_names_the_file_and_field(extended):
    bad = extended.cards_dir / "diuretic-checks" / "loop-diuretics.yaml"
    bad.write_text(RULE_FILE.replace("[loop-diuretic]", "[no-such-class]"))
    assert main(["check-rules"]) == 1
