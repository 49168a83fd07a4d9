"""The service registry (issue 23): every CDS service is declared once, and discovery, the
routes, validation and the command line come from the declarations."""

from __future__ import annotations

import json

from conftest import minimal_request

from cds_service.cli import main
from cds_service.protocol import hooks, services


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
