"""Fetching what the EHR did not prefetch, against a real FHIR server on loopback.

The server (tests/fhir_server.py) holds a real Synthea patient; the service talks to it
over HTTP with requests, nothing is mocked. The key property: the same patient gets the
same cards whether the EHR prefetches everything, nothing, or something in between.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import time

import pytest
from fhir_server import FhirServer, fhir_response, outcome
from pytest_httpserver import HTTPServer
from synthea import SYNTHEA_DIR, hook_request, patient_resources
from werkzeug import Response

from cds_service import metrics
from cds_service.config import Settings
from cds_service.engine import load_rules
from cds_service.protocol.fhir_client import FETCH_FAILED, FetchError, FhirFetcher, expected_type
from cds_service.protocol.prefetch import resolve
from cds_service.service import CdsService
from cds_service.web.app import create_app

TODAY = "2026-11-24"
TOKEN = "s3cret-token-e9f1"
GABRIEL = SYNTHEA_DIR / "Gabriel_Blanda_95f1227c.json"
KEYS = ("patient", "conditions", "observations", "procedures", "medications", "servicerequests")
URL = "/cds-services/leg-cramp-referral"


@pytest.fixture(scope="module")
def ruleset():
    return load_rules(Settings.from_env({}).cards_dir)


@pytest.fixture(scope="module")
def full_request(ruleset) -> dict:
    """Gabriel with a leg-cramp problem, everything prefetched (as a server would answer)."""
    codes = {(c.system, c.code) for c in ruleset.observation_codes}
    return hook_request(GABRIEL, observation_codes=codes)


@pytest.fixture
def http_server():
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def fhir(http_server, full_request) -> FhirServer:
    """Every resource of the patient (not only what the templates select) plus the cramp."""
    _, resources = patient_resources(GABRIEL)
    cramp = [
        r
        for r in full_request["prefetch"]["conditions"]["entry"]
        if r["resource"]["id"].startswith("leg-cramps-")
    ]
    server = FhirServer(http_server, resources + [cramp[0]["resource"]], token=TOKEN)
    yield server
    server.release.set()


def make_settings(tmp_path, **overrides) -> Settings:
    """Development settings; a wide fetch budget, so a loaded machine does not turn a slow
    answer into a 412 (the tests about the budget give their own)."""
    values = {
        "today": TODAY,
        "allow_http_fhir": True,
        "data_dir": tmp_path,
        "auth_mode": "off",
        "fhir_timeout": 30.0,
    }
    return Settings.from_env({}, **{**values, **overrides})


@pytest.fixture
def make_client(tmp_path, ruleset):
    def make(**overrides):
        settings = make_settings(tmp_path, **overrides)
        return create_app(settings, service=CdsService(settings, ruleset=ruleset)).test_client()

    return make


def ask(full_request, fhir=None, drop=(), mode="absent", token=TOKEN) -> dict:
    """The request with the ``drop`` keys absent / null / an OperationOutcome."""
    request = copy.deepcopy(full_request)
    for key in drop:
        if mode == "absent":
            request["prefetch"].pop(key)
        elif mode == "null":
            request["prefetch"][key] = None
        else:
            request["prefetch"][key] = outcome("processing", "could not prefetch")
    if fhir is not None:
        request["fhirServer"] = fhir if isinstance(fhir, str) else fhir.base
        request["fhirAuthorization"] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "leg-cramp-referral",
        }
    return request


def stable(cards: list[dict]) -> list[dict]:
    """Cards without their fresh uuids, for comparing two calls."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "uuid"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(cards)


def routes(body: dict) -> list[str]:
    return [c["source"]["topic"]["code"] for c in body["cards"]]


def paged_prefetch(request: dict, fhir: FhirServer, key: str, rtype: str, page_size: int) -> None:
    """Replace a prefetched key by the server's first page, which carries a next link."""
    query = resolve(f"{rtype}?patient={{{{context.patientId}}}}", request["context"])
    request["prefetch"][key] = fhir.first_page(
        rtype, query.split("?", 1)[1] + f"&_count={page_size}"
    )
    assert any(link["relation"] == "next" for link in request["prefetch"][key]["link"])


# --- the key property ------------------------------------------------------------------


@pytest.mark.parametrize(
    "drop, mode",
    [
        (KEYS, "absent"),
        (KEYS, "null"),
        (KEYS, "outcome"),
        (("patient", "observations"), "absent"),
        (("conditions", "medications", "servicerequests"), "null"),
        (("procedures",), "outcome"),
    ],
    ids=["nothing", "all-null", "all-outcome", "some-absent", "some-null", "one-outcome"],
)
def test_same_cards_whatever_the_ehr_prefetched(make_client, full_request, fhir, drop, mode):
    client = make_client()
    everything = client.post(URL, json=full_request)
    assert everything.status_code == 200
    assert "nephrology" in routes(everything.json)
    assert fhir.requests == []

    fetched = client.post(URL, json=ask(full_request, fhir, drop, mode))
    assert fetched.status_code == 200, fetched.json
    assert stable(fetched.json["cards"]) == stable(everything.json["cards"])
    asked = {r["path"].split("/")[2] for r in fhir.requests}
    assert asked == {
        {
            "patient": "Patient",
            "conditions": "Condition",
            "observations": "Observation",
            "procedures": "Procedure",
            "medications": "MedicationRequest",
            "servicerequests": "ServiceRequest",
        }[k]
        for k in drop
    }
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in fhir.requests)
    assert all(r["accept"] == "application/fhir+json" for r in fhir.requests)


def test_prefetched_bundle_with_next_link_is_completed(make_client, full_request, fhir):
    client = make_client()
    everything = client.post(URL, json=full_request).json
    request = ask(full_request, fhir)
    paged_prefetch(request, fhir, "conditions", "Condition", page_size=40)
    response = client.post(URL, json=request)
    assert response.status_code == 200
    assert stable(response.json["cards"]) == stable(everything["cards"])
    pages = [r for r in fhir.requests if r["path"] == "/fhir/Condition"]
    assert len(pages) == 4  # 171 conditions + the cramp, 40 a page: the EHR sent page 1


def test_search_is_followed_over_many_pages(tmp_path, full_request, fhir):
    fhir.page_size = 50
    fetcher = FhirFetcher(make_settings(tmp_path))
    query = resolve("Condition?patient={{context.patientId}}", full_request["context"])
    result = fetcher(fhir.base, TOKEN, {"conditions": query})
    expected = [r["resource"]["id"] for r in full_request["prefetch"]["conditions"]["entry"]]
    assert len(fhir.requests) == -(-len(expected) // 50) >= 3
    assert sorted(r["id"] for r in result["conditions"]) == sorted(expected)


def test_too_many_pages_is_a_failure_not_partial_data(make_client, full_request, fhir, caplog):
    caplog.set_level(logging.INFO)
    fhir.page_size = 50
    response = make_client(fhir_max_pages=2).post(
        URL, json=ask(full_request, fhir, ["observations"])
    )
    assert f"observations ({FETCH_FAILED})" in failure_text(response)
    assert logged_reason(caplog, "observations").endswith("more than 2 pages")


# --- failures: 412 with the key and one reason, never the token; why in the log ----------


def failure_text(response) -> str:
    assert response.status_code == 412, response.json
    body = response.get_data(as_text=True)
    assert TOKEN not in body
    assert response.json["resourceType"] == "OperationOutcome"
    assert response.json["issue"][0]["code"] == "incomplete"
    return response.json["issue"][0]["details"]["text"]


def logged_reason(caplog, key: str) -> str:
    """The fetcher's log line about ``key``: the reason the 412 does not tell the caller."""
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "cds_service.protocol.fhir_client"
        and f"fetch of {key} failed" in r.getMessage()
    ]
    assert lines, f"nothing logged about {key}"
    return lines[-1]


def test_wrong_token_gives_412_and_logs_that_the_server_refused_it(
    make_client, full_request, fhir, caplog
):
    caplog.set_level(logging.DEBUG)
    fhir.token = "another-token"
    response = make_client().post(URL, json=ask(full_request, fhir, ["conditions"]))
    text = failure_text(response)
    assert f"conditions ({FETCH_FAILED})" in text
    assert logged_reason(caplog, "conditions").endswith(
        "server refused the access token (HTTP 401)"
    )
    assert fhir.requests[0]["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in caplog.text
    assert full_request["context"]["patientId"] not in text


def test_server_not_listening(make_client, full_request, caplog):
    caplog.set_level(logging.INFO)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    response = make_client().post(
        URL, json=ask(full_request, f"http://127.0.0.1:{port}/fhir", ["patient"])
    )
    assert f"patient ({FETCH_FAILED})" in failure_text(response)
    assert logged_reason(caplog, "patient").endswith("server unreachable (ConnectionError)")


def test_no_fhir_server_and_required_data_missing(make_client, full_request):
    text = failure_text(
        make_client().post(URL, json=ask(full_request, None, ["patient", "conditions"]))
    )
    assert "conditions (not prefetched and no fhirServer given)" in text
    assert "patient (not prefetched and no fhirServer given)" in text


def test_server_that_never_answers_is_given_up_within_the_budget(make_client, full_request, caplog):
    caplog.set_level(logging.INFO)
    budget = 0.5
    with socket.socket() as sock:  # accepts connections (backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        request = ask(full_request, f"http://127.0.0.1:{sock.getsockname()[1]}/fhir", KEYS)
        started = time.monotonic()
        response = make_client(fhir_timeout=budget).post(URL, json=request)
        elapsed = time.monotonic() - started
    assert f"patient ({FETCH_FAILED})" in failure_text(response)
    assert logged_reason(caplog, "patient").endswith("timed out")
    assert elapsed < budget + 0.3


def test_server_that_hangs_mid_paging_gives_up_and_does_not_delay_the_next_call(
    tmp_path, make_client, full_request, fhir
):
    budget = 0.6

    def hang_after_first_page(request):
        if "_offset" in request.args:
            fhir.release.wait(10)
        return fhir.search("Condition", request)

    fhir.page_size = 50
    fhir.faults["Condition"] = hang_after_first_page
    fetcher = FhirFetcher(make_settings(tmp_path, fhir_timeout=budget))
    context = full_request["context"]
    queries = {
        "conditions": resolve("Condition?patient={{context.patientId}}", context),
        "patient": resolve("Patient/{{context.patientId}}", context),
    }
    started = time.monotonic()
    result = fetcher(fhir.base, TOKEN, queries)
    assert time.monotonic() - started < budget + 0.2
    assert result["conditions"] == FetchError("timed out")
    assert [r["resourceType"] for r in result["patient"]] == ["Patient"]
    # The stuck worker belongs to that call only: the next call is not queued behind it.
    started = time.monotonic()
    assert (
        fetcher(fhir.base, TOKEN, {"patient": queries["patient"]})["patient"][0]["id"]
        == context["patientId"]
    )
    assert time.monotonic() - started < budget
    # And through the service: a 412 that names the key.
    text = failure_text(
        make_client(fhir_timeout=budget).post(URL, json=ask(full_request, fhir, ["conditions"]))
    )
    assert text.endswith(f"conditions ({FETCH_FAILED}).")


def test_malformed_json(make_client, full_request, fhir, caplog):
    caplog.set_level(logging.INFO)
    fhir.faults["Condition"] = lambda request: Response(
        '{"resourceType": "Bundle", "entry": [', content_type="application/fhir+json"
    )
    text = failure_text(make_client().post(URL, json=ask(full_request, fhir, ["conditions"])))
    assert f"conditions ({FETCH_FAILED})" in text
    assert logged_reason(caplog, "conditions").endswith("server answered with malformed JSON")


def test_search_answered_with_something_that_is_not_a_bundle(
    make_client, full_request, fhir, caplog
):
    caplog.set_level(logging.INFO)
    patient = full_request["prefetch"]["patient"]
    fhir.faults["Procedure"] = lambda request: fhir_response(patient)
    fhir.faults["Condition"] = lambda request: fhir_response(outcome("too-costly", "too many"))
    text = failure_text(
        make_client().post(URL, json=ask(full_request, fhir, ["procedures", "conditions"]))
    )
    assert f"conditions ({FETCH_FAILED}); procedures ({FETCH_FAILED})" in text
    assert logged_reason(caplog, "procedures").endswith(
        "server answered with Patient where a Bundle was expected"
    )
    assert logged_reason(caplog, "conditions").endswith(
        "server answered with an OperationOutcome where a Bundle was expected"
    )
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("cds_service")]
    assert patient["id"] not in text and not any(patient["id"] in m for m in ours)


def test_next_link_to_another_host_is_refused(make_client, full_request, fhir, caplog):
    caplog.set_level(logging.INFO)

    def leaky(request):
        bundle = json.loads(fhir.search("Condition", request).get_data())
        bundle["link"] = [
            {
                "relation": "next",
                "url": fhir.base.replace("127.0.0.1", "localhost") + "/Condition?page=2",
            }
        ]
        return fhir_response(bundle)

    fhir.faults["Condition"] = leaky
    text = failure_text(make_client().post(URL, json=ask(full_request, fhir, ["conditions"])))
    assert f"conditions ({FETCH_FAILED})" in text
    assert logged_reason(caplog, "conditions").endswith(
        "next page link points at another server or scheme (refused)"
    )
    assert len(fhir.requests) == 1


def test_plain_http_server_refused_unless_allowed(make_client, full_request, fhir, caplog):
    caplog.set_level(logging.INFO)
    response = make_client(allow_http_fhir=False).post(
        URL, json=ask(full_request, fhir, ["patient"])
    )
    assert f"patient ({FETCH_FAILED})" in failure_text(response)
    assert "plain-http fhirServer refused" in logged_reason(caplog, "patient")
    assert fhir.requests == []


@pytest.mark.parametrize(
    "server", ["file:///etc/passwd", "0", "http://user:pw@127.0.0.1/fhir", "https://h/f?x=1"]
)
def test_fhir_server_that_is_not_an_http_base_url_is_a_schema_violation(
    make_client, full_request, tmp_path, server
):
    response = make_client().post(URL, json=ask(full_request, server, ["patient"]))
    assert response.status_code == 400
    assert "$.fhirServer" in response.json["issue"][0]["details"]["text"]
    assert server not in response.get_data(as_text=True)
    # The fetcher refuses them too, should one be called without the schema (the CLI).
    assert FhirFetcher(make_settings(tmp_path)).check_server(server) == (
        "fhirServer is not an http(s) base URL"
    )


def test_optional_key_failing_still_gives_cards(make_client, full_request, fhir, caplog):
    caplog.set_level(logging.DEBUG)
    fhir.faults["ServiceRequest"] = lambda request: fhir_response(outcome("exception", "boom"), 500)
    before = metrics.FHIR_FETCH_ERRORS.labels("servicerequests")._value.get()
    response = make_client().post(URL, json=ask(full_request, fhir, ["servicerequests", "patient"]))
    assert response.status_code == 200
    assert "nephrology" in routes(response.json)
    assert metrics.FHIR_FETCH_ERRORS.labels("servicerequests")._value.get() == before + 1
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        f"optional prefetch key servicerequests is missing and could not be fetched: {FETCH_FAILED}"
        in warning
    )
    assert logged_reason(caplog, "servicerequests").endswith("server answered HTTP 500")
    assert TOKEN not in caplog.text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("cds_service")]
    assert not any(full_request["context"]["patientId"] in m for m in ours)


# --- small pieces ----------------------------------------------------------------------


def test_templates_are_resolved_and_ids_cannot_change_the_query():
    context = {"patientId": "a&b=c/../x", "userId": "Practitioner/p 1"}
    assert (
        resolve("Condition?patient={{context.patientId}}", context)
        == "Condition?patient=a%26b%3Dc/%2E%2E/x"
    )
    assert (
        resolve("X?who={{userPractitionerId}}&role={{userPractitionerRoleId}}", context)
        == "X?who=p%201&role="
    )
    assert resolve("{{context.userId}}", context) == "Practitioner/p%201"


def test_reads_expect_their_type_and_searches_a_bundle():
    assert expected_type("Patient/123") == "Patient"
    assert expected_type("Condition?patient=123") == "Bundle"
    assert expected_type("Observation") == "Bundle"
    assert expected_type("Patient/123/_history") == "Bundle"
    assert expected_type("Patient/$everything") == "Bundle"


def test_query_cannot_leave_the_base_url(tmp_path, fhir):
    fetcher = FhirFetcher(make_settings(tmp_path))
    result = fetcher(fhir.base, TOKEN, {"a": "../other/Patient/1", "b": "//evil.example/Patient/1"})
    assert result == {
        "a": FetchError("query leaves the fhirServer base URL"),
        "b": FetchError("query leaves the fhirServer base URL"),
    }
    assert fhir.requests == []
