"""The service registry (issue 23): every CDS service is declared once, and discovery, the
routes, validation and the command line come from the declarations."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import minimal_request
from test_cli import overridden

from cds_service.cli import main
from cds_service.config import Settings
from cds_service.protocol import hooks, services
from cds_service.web.app import create_app

EXAMPLES = Path(__file__).resolve().parents[1] / "fhir_examples"


def test_discovery_lists_every_declared_service(client):
    listed = client.get("/cds-services").get_json()["services"]
    assert [(s["id"], s["hook"]) for s in listed] == [(s.id, s.hook) for s in services.SERVICES]
    hooks.validator("discovery").validate({"services": listed})
    for entry, declared in zip(listed, services.SERVICES, strict=True):
        assert set(entry["prefetch"]) == {name for name, _required in declared.prefetch}
        assert "{routes}" not in entry["description"]


def test_a_request_for_another_hook_is_refused_naming_the_field(client):
    request = minimal_request()
    request["hook"] = "order-sign"
    response = client.post(f"/cds-services/{services.SERVICES[0].id}", json=request)
    assert response.status_code == 400
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "$.hook" in outcome["issue"][0]["details"]["text"]


def test_an_unknown_service_is_404(client):
    response = client.post("/cds-services/no-such-service", json=minimal_request())
    assert response.status_code == 404
    assert client.post("/cds-services/no-such-service/feedback", json={}).status_code == 404


def test_every_hook_has_its_request_schema():
    for service in services.SERVICES:
        assert hooks.validator(service.schema).schema["properties"]["hook"] == {
            "const": service.hook
        }


def test_the_command_line_picks_the_service_of_the_hook(tmp_path, capsys):
    path = tmp_path / "request.json"
    path.write_text(json.dumps(minimal_request()))
    assert main(["evaluate", "--no-suppressions", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"cards": []}
    wrong = minimal_request()
    wrong["hook"] = "no-such-hook"
    path.write_text(json.dumps(wrong))
    assert main(["evaluate", "--no-suppressions", str(path)]) == 1
    assert "$.hook" in capsys.readouterr().out
    path.write_text(json.dumps(minimal_request()))
    assert main(["evaluate", "--no-suppressions", "--service", "nope", str(path)]) == 1
    assert "Unknown CDS service id" in capsys.readouterr().out


def test_discovery_lists_the_three_services(client):
    listed = client.get("/cds-services").get_json()["services"]
    assert {(s["id"], s["hook"]) for s in listed} == {
        ("leg-cramp-referral", "patient-view"),
        ("leg-cramp-order-sign", "order-sign"),
        ("leg-cramp-order-select", "order-select"),
    }


def _order_example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def test_each_order_service_refuses_the_other_hook(client):
    request = _order_example("vascular-order-sign-orthopedics-drafted")
    response = client.post("/cds-services/leg-cramp-order-select", json=request)
    assert response.status_code == 400
    assert "$.hook" in response.get_json()["issue"][0]["details"]["text"]
    request["hook"] = "order-select"  # and no selections: the order-select schema names them
    response = client.post("/cds-services/leg-cramp-order-select", json=request)
    assert response.status_code == 400
    assert "selections" in response.get_json()["issue"][0]["details"]["text"]
    del request["context"]["draftOrders"]
    request["hook"] = "order-sign"
    response = client.post("/cds-services/leg-cramp-order-sign", json=request)
    assert response.status_code == 400
    assert "draftOrders" in response.get_json()["issue"][0]["details"]["text"]


def test_feedback_and_suppression_are_per_service(tmp_path, monkeypatch, capsys):
    settings = Settings.from_env(
        {}, today="2026-11-24", data_dir=tmp_path, suppression_without_auth=True
    )
    app = create_app(settings)
    client = app.test_client()
    store = app.extensions["cds_store"]
    try:
        request = _order_example("vascular-order-sign-orthopedics-drafted")
        sign = "/cds-services/leg-cramp-order-sign"
        (card,) = client.post(sign, json=request).get_json()["cards"]
        assert store.flush()
        item = overridden(card, "already-under-care")
        stored = client.post(sign + "/feedback", json={"feedback": [item]})
        assert stored.status_code == 200, stored.get_data(as_text=True)
        # The order-sign card is suppressed for this patient ...
        assert client.post(sign, json=request).get_json()["cards"] == []
        # ... not the order-select service's, nor the chart's own vascular card.
        select = {**request, "hook": "order-select"}
        select["context"] = {
            **request["context"],
            "selections": ["ServiceRequest/draft-referral-1"],
        }
        answered = client.post("/cds-services/leg-cramp-order-select", json=select).get_json()
        assert [c["source"]["topic"]["code"] for c in answered["cards"]] == ["vascular"]
        chart = json.loads((EXAMPLES / "vascular-abi-0.72-claudication.json").read_text())
        shown = client.post("/cds-services/leg-cramp-referral", json=chart).get_json()["cards"]
        assert "vascular" in [c["source"]["topic"]["code"] for c in shown]
        assert store.flush()
    finally:
        store.close()
    # The report counts the order card's override under its service.
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path))
    capsys.readouterr()
    assert main(["report", "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out)["rows"] if ":" in r["route"]]
    signed = [r for r in rows if r["route"] == "leg-cramp-order-sign:vascular"]
    assert signed and signed[0]["overridden"] == 1, rows


def test_a_declaration_the_server_cannot_serve_stops_it_naming_the_service():
    base = services.SERVICES[0]
    bad = [
        (replace(base, id="twice"), replace(base, id="twice")),
        (replace(base, hook="no-such-hook"),),
        (replace(base, prefetch=(("nowhere", True),)),),
        (replace(base, rules="elsewhere"),),
    ]
    services.check_declarations(services.SERVICES, set(services.CHART))  # as shipped
    for declared, why in zip(bad, ["twice", "schema", "nowhere", "rules"], strict=True):
        with pytest.raises(services.DeclarationError, match=why):
            services.check_declarations(declared, set(services.CHART))
