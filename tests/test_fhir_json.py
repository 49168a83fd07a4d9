"""The typed decoder of hook requests (fhir_json): same cards as plain dicts, same leniency."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from conftest import minimal_request
from synthea import SYNTHEA_DIR, hook_request, synthea_files

from cds_service.config import Settings
from cds_service.engine import validation as record
from cds_service.protocol.fhir_json import NODE_TYPES, FhirNode, decode_request, schema_view
from cds_service.service import CdsService

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "fhir_examples").glob("*.json"))
UUID = re.compile(rb'"uuid":"[^"]+"')


@pytest.fixture(scope="module")
def service() -> CdsService:
    return CdsService(Settings.from_env({}, today="2026-11-24"), fetcher=lambda *a: {})


def _cards(service: CdsService, request: object) -> bytes:
    return UUID.sub(b'"uuid":"-"', orjson.dumps(service.evaluate(request).response))


def _requests():
    for path in EXAMPLES:
        yield path.name, path.read_bytes()
    if SYNTHEA_DIR.exists():
        for path in synthea_files():
            yield path.name, orjson.dumps(hook_request(path))


@pytest.mark.parametrize(
    "name, body", list(_requests()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_typed_and_plain_decoding_give_the_same_cards(service, name, body):
    typed = decode_request(body)
    assert any(isinstance(v, FhirNode) for v in typed["prefetch"].values())
    assert _cards(service, typed) == _cards(service, orjson.loads(body))


def test_every_element_the_engine_reads_is_decoded():
    """Each resource type's class holds what the rules, the shape checks and the R4B
    validation read of it (``validation.ELEMENTS_OF``), no more and no less."""
    classes = {node.resourceType: node for node in NODE_TYPES}
    assert set(classes) == set(record.ELEMENTS_OF)
    for rtype, node in classes.items():
        assert node._fields == record.ELEMENTS_OF[rtype], rtype
    for rtype, elements in record.ELEMENTS_READ.items():
        assert (
            elements | record.CHOICE_VARIANTS_OF.get(rtype, frozenset())
            <= (record.ELEMENTS_OF[rtype])
        ), rtype
    every = set().union(*record.ELEMENTS_OF.values())
    assert set(record._SHAPES) <= every
    assert record.CHOICE_VARIANTS <= every


def test_a_resource_of_another_type_decodes_the_request_as_plain_dicts():
    """Only the types the prefetch carries have a class: any other (an Encounter in a
    Bundle, a resource with no type) makes the whole request fall back, never a crash."""
    for odd in ({"resourceType": "Encounter", "id": "e1"}, {"id": "untyped"}):
        body = orjson.dumps(
            {"prefetch": {"conditions": {"resourceType": "Bundle", "entry": [{"resource": odd}]}}}
        )
        decoded = decode_request(body)
        assert decoded == orjson.loads(body)


def test_a_node_reads_like_the_dict_it_replaces():
    body = orjson.dumps(
        {
            "resourceType": "Observation",
            "id": "o1",
            "status": None,
            "code": {"coding": [{"code": "2823-3"}]},
            "text": {"div": "<div/>"},
        }
    )
    node = decode_request(orjson.dumps({"prefetch": {"x": orjson.loads(body)}}))["prefetch"]["x"]
    assert node.get("id") == "o1" and node["resourceType"] == "Observation"
    assert node.get("status") is None and "status" not in node and node.get("status", 1) == 1
    assert node.get("text") is None  # skipped while parsing: no rule reads it
    assert sorted(node) == ["code", "id", "resourceType"]
    assert dict(node.items()) == {
        "resourceType": "Observation",
        "id": "o1",
        "code": {"coding": [{"code": "2823-3"}]},
    }
    with pytest.raises(KeyError):
        node["status"]


@pytest.mark.parametrize(
    "prefetch",
    [
        {"observations": {"resourceType": "Bundle", "entry": 5}},
        {"observations": {"resourceType": "Bundle", "entry": [7, {"resource": 3}]}},
        {"observations": "not an object"},
    ],
)
def test_an_unusual_shape_falls_back_to_plain_dicts(prefetch):
    body = orjson.dumps({**minimal_request(), "prefetch": prefetch})
    decoded = decode_request(body)
    assert decoded == orjson.loads(body)


def test_the_schema_still_sees_nulls_and_wrong_types(client):
    request = minimal_request()
    request["fhirServer"] = None
    response = client.post("/cds-services/leg-cramp-referral", json=request)
    assert response.status_code == 400 and "fhirServer" in response.get_data(as_text=True)
    request = minimal_request()
    request["prefetch"]["patient"] = None  # null prefetch value: fetched or 412, not a 400
    view = schema_view(decode_request(orjson.dumps(request)))
    assert view["prefetch"]["patient"] is None and view["prefetch"]["conditions"] == {}


def test_a_declared_method_name_is_not_an_element():
    node = decode_request(orjson.dumps({"prefetch": {"x": {"resourceType": "Patient"}}}))
    assert node["prefetch"]["x"].get("keys") is None and "items" not in node["prefetch"]["x"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"hook": "patient-view", "context": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"hook": "patient-view", "hookInstance": "\xff\xfe"}',
    ],
)
def test_bodies_the_typed_decoder_cannot_take_get_the_plain_answer(client, body):
    response = client.post(
        "/cds-services/leg-cramp-referral", data=body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"


CRAMP = {
    "resourceType": "Condition",
    "id": "c1",
    "subject": {"reference": "Patient/p1"},
    "clinicalStatus": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
        ]
    },
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "449918009"}]},
    "onsetDateTime": "2026-11-01",
}
POTASSIUM = {
    "resourceType": "Observation",
    "id": "k1",
    "status": "final",
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2026-11-23",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
    "valueQuantity": {
        "value": 2.1,
        "unit": "mmol/L",
        "system": "http://unitsofmeasure.org",
        "code": "mmol/L",
    },
}


@pytest.mark.parametrize(
    "cramp, potassium",
    [
        ({"medication": {"text": "an R5-style element no rule reads"}}, {}),
        ({}, {"effectiveInstant": None}),
        ({"abatementDateTime": None}, {"issued": None, "effectivePeriod": None}),
        ({}, {"valueQuantity": {"value": 2.1, "unit": "mmol/L", "code": "mmol/L"}, "note": 5}),
        ({"onsetString": 7}, {}),  # a wrongly typed choice variant: invalid either way
        ({"abatementFoo": "2026-11-02"}, {}),  # not an abatement[x] variant: ignored by both
        ({"abatementString": "resolved"}, {}),  # abated: the cramp problem no longer counts
    ],
)
def test_both_decoders_validate_the_same_elements(service, cramp, potassium):
    request = minimal_request(resources=[{**CRAMP, **cramp}, {**POTASSIUM, **potassium}])
    body = orjson.dumps(request)
    assert _cards(service, decode_request(body)) == _cards(service, orjson.loads(body))
    # one unrelated malformed resource sends the request down the plain path: same answer
    odd = minimal_request(
        resources=[{**CRAMP, **cramp}, {**POTASSIUM, **potassium}, {**POTASSIUM, "id": 5}]
    )
    assert _cards(service, decode_request(orjson.dumps(odd))) == _cards(
        service, decode_request(body)
    )


def test_a_trailing_newline_in_the_patient_id_is_named(client):
    request = minimal_request()
    request["context"]["patientId"] = "p1\n"
    response = client.post("/cds-services/leg-cramp-referral", json=request)
    assert response.status_code == 400
    assert "$.context.patientId: violates 'pattern'" in response.get_data(as_text=True)


def _dvt_with(extra: dict, *, add_encounter: bool = False) -> bytes:
    """The same-day DVT example, its DVT Condition given ``extra`` elements."""
    body = orjson.loads((ROOT / "fhir_examples" / "urgent-care-dvt.json").read_bytes())
    entries = body["prefetch"]["conditions"]["entry"]
    dvt = next(e["resource"] for e in entries if "I82" in orjson.dumps(e["resource"]).decode())
    dvt.update(extra)
    if add_encounter:  # an unrelated resource of a type with no class: the dict path
        entries.append({"resource": {"resourceType": "Encounter", "id": "e1"}})
    return orjson.dumps(body)


def _indicators(service, request) -> list[str]:
    return [card["indicator"] for card in service.evaluate(request).response["cards"]]


@pytest.mark.parametrize("odd", [{"status": 5}, {"effectiveDateTime": 7}, {"gender": []}])
def test_a_wrongly_typed_element_of_another_type_costs_nothing_on_either_path(service, odd):
    """A Condition carrying a malformed element Conditions do not have (found in review):
    the typed decoder does not read it, so the plain path must not leave the problem out
    for it either, and the urgent DVT card is there on both, with or without an unrelated
    Encounter that sends the whole request down the plain path."""
    body = _dvt_with(odd)
    typed = _indicators(service, decode_request(body))
    assert typed == _indicators(service, orjson.loads(body))
    assert "critical" in typed
    assert _indicators(service, decode_request(_dvt_with(odd, add_encounter=True))) == typed


def test_a_wrongly_typed_element_of_its_own_type_still_leaves_the_resource_out(service):
    """The other side: a Condition whose own element is malformed is left out on both
    paths (the typed decoder falls back to plain dicts for it)."""
    body = _dvt_with({"clinicalStatus": "active"})
    assert _indicators(service, decode_request(body)) == _indicators(service, orjson.loads(body))
    assert "critical" not in _indicators(service, orjson.loads(body))
