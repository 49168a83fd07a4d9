"""Metrics, access logs and Server-Timing: in the Flask test client and under real gunicorn.

No timing assertions: speed is measured by ``make bench`` (bench/run.py), not by tests.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import requests
from conftest import minimal_request
from sqlalchemy import select
from synthea import SYNTHEA_DIR, hook_request

from cds_service import logs, metrics
from cds_service.config import Settings
from cds_service.protocol.services import SERVICES
from cds_service.storage import database
from cds_service.web.app import create_app

ROOT = Path(__file__).resolve().parents[1]
GABRIEL = SYNTHEA_DIR / "Gabriel_Blanda_95f1227c.json"
URL = "/cds-services/leg-cramp-referral"
HOOK_ENDPOINT = "/cds-services/<service_id>"

needs_synthea = pytest.mark.skipif(not GABRIEL.is_file(), reason="Synthea data not available")


def metric(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


@pytest.fixture(scope="module")
def gabriel_request() -> dict:
    return hook_request(GABRIEL)


@pytest.fixture
def obs_app(tmp_path):
    settings = Settings.from_env({}, today="2026-11-24", data_dir=tmp_path, auth_mode="off")
    return create_app(settings)


@pytest.fixture
def access_lines(obs_app):
    """Formatted access-log output, through the same JSON formatter the service installs."""
    stream = io.StringIO()
    handler = logs.configure("INFO", stream=stream)
    yield lambda: [
        json.loads(line)
        for line in stream.getvalue().splitlines()
        if '"cds_service.access"' in line
    ]
    logs.configure("INFO")  # back to stderr
    assert handler not in __import__("logging").getLogger().handlers


# --------------------------------------------------------------------------- metrics


@needs_synthea
def test_metrics_count_requests_and_cards_by_route(obs_app, gabriel_request):
    client = obs_app.test_client()
    before = client.get("/metrics").get_data(as_text=True)
    response = client.post(URL, json=gabriel_request)
    assert response.status_code == 200
    routes = [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]
    assert "nephrology" in routes

    after = client.get("/metrics")
    assert after.status_code == 200
    assert after.content_type.startswith("text/plain")
    text = after.get_data(as_text=True)
    count = "cds_http_request_duration_seconds_count"
    assert (
        metric(text, count, endpoint=HOOK_ENDPOINT, method="POST", status="200")
        - metric(before, count, endpoint=HOOK_ENDPOINT, method="POST", status="200")
    ) == 1
    for route in routes:
        assert (
            metric(text, "cds_cards_issued_total", route=route)
            - metric(before, "cds_cards_issued_total", route=route)
        ) == 1
    # The other families are declared (FHIR fetches and JWT checks record into them).
    for family in (
        "cds_http_request_duration_seconds_bucket",
        "cds_cards_issued_total",
        "cds_fhir_fetch_duration_seconds",
        "cds_fhir_fetch_errors_total",
        "cds_jwt_rejections_total",
    ):
        assert (
            f"# TYPE {family.removesuffix('_bucket').removesuffix('_total')}" in text
            or family in text
        )


def test_requests_the_typed_decoder_cannot_take_are_counted(obs_app):
    """An Encounter in a Bundle (an EHR's ``_include``) is decoded as plain JSON: correct,
    slower, and counted, so an operator sees when most calls take that path."""
    client = obs_app.test_client()
    usual = minimal_request()
    odd = minimal_request()
    odd["prefetch"]["conditions"]["entry"] = [
        {"resource": {"resourceType": "Encounter", "id": "e1", "status": "finished"}}
    ]
    name = "cds_request_plain_decodes_total"
    before = metric(client.get("/metrics").get_data(as_text=True), name)
    assert client.post(URL, json=usual).status_code == 200
    assert metric(client.get("/metrics").get_data(as_text=True), name) == before
    assert client.post(URL, json=odd).status_code == 200
    assert metric(client.get("/metrics").get_data(as_text=True), name) == before + 1
    rejected = minimal_request()
    rejected["prefetch"] = "not an object"  # the typed decoder refuses it, and so do we (400)
    for body in (b"{", b"[]", b'"x"', b"null", orjson.dumps(rejected)):
        assert client.post(URL, data=body, content_type="application/json").status_code == 400
    assert metric(client.get("/metrics").get_data(as_text=True), name) == before + 1


_PLAIN_CALL = """
import logging, sys, tempfile
from pathlib import Path
from werkzeug.test import EnvironBuilder
from conftest import minimal_request
from cds_service.config import Settings
from cds_service.web.app import create_app
logging.disable(logging.CRITICAL)
settings = Settings.from_env({}, data_dir=Path(tempfile.mkdtemp()), auth_mode="off")
request = minimal_request()
request["prefetch"]["conditions"]["entry"] = [{"resource": {"resourceType": "Encounter"}}]
environ = EnvironBuilder("/cds-services/leg-cramp-referral", method="POST", json=request)
environ = environ.get_environ()
statuses = []
answer = create_app(settings)(environ, lambda status, headers, exc_info=None: statuses.append(status))
b"".join(answer)
print(statuses[0][:3], "prometheus_client" in sys.modules)
answer.close()
"""


@pytest.mark.parametrize("metrics_dir", [None, "/nonexistent/cds-metrics"])
def test_a_plain_decode_is_counted_after_the_answer_and_never_fails_it(metrics_dir):
    """The counter is made and counted once the answer is sent (prometheus-client stays off
    the first answer's path), and a metrics directory that cannot be written (removed under
    a running worker) costs the count, not the answer."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if metrics_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
    out = subprocess.run(
        [sys.executable, "-c", _PLAIN_CALL], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["200", "False"], out.stderr[-2000:]


def test_error_statuses_are_counted(obs_app):
    client = obs_app.test_client()
    before = client.get("/metrics").get_data(as_text=True)
    assert client.post(URL, data="{", content_type="application/json").status_code == 400
    text = client.get("/metrics").get_data(as_text=True)
    count = "cds_http_request_duration_seconds_count"
    assert (
        metric(text, count, endpoint=HOOK_ENDPOINT, status="400")
        - metric(before, count, endpoint=HOOK_ENDPOINT, status="400")
    ) == 1


def test_server_timing_header(obs_app, gabriel_request):
    response = obs_app.test_client().get("/healthz")
    assert re.fullmatch(r"app;dur=\d+\.\d{3}", response.headers["Server-Timing"])
    response = obs_app.test_client().post(URL, json=gabriel_request)
    timing = response.headers["Server-Timing"]
    assert re.fullmatch(
        r"app;dur=\d+\.\d{3}, parse;dur=\d+\.\d{3}, evaluate;dur=\d+\.\d{3}", timing
    )
    total, parse, evaluate = map(float, re.findall(r"dur=([\d.]+)", timing))
    assert parse + evaluate <= total


def test_a_failing_metric_does_not_lose_the_access_line_or_the_card_records(
    obs_app, gabriel_request, monkeypatch, caplog
):
    def broken(*labels):
        raise RuntimeError("metrics backend gone")

    monkeypatch.setattr(metrics.REQUESTS, "labels", broken)
    store = obs_app.extensions["cds_store"]
    response = obs_app.test_client().post(URL, json=gabriel_request)
    assert response.status_code == 200
    assert "bookkeeping after a response failed: RuntimeError" in caplog.text
    assert any(r.name == "cds_service.access" for r in caplog.records)
    assert store.flush()
    cards = {c["uuid"] for c in response.get_json()["cards"]}
    with store.engine.connect() as conn:
        stored = {row[0] for row in conn.execute(select(database.issued_card.c.card_uuid))}
    assert cards <= stored


def test_metrics_can_be_disabled(tmp_path):
    settings = Settings.from_env({}, data_dir=tmp_path, metrics_enabled=False)
    assert create_app(settings).test_client().get("/metrics").status_code == 404


def label_values(text: str, name: str, label: str) -> set[str]:
    return {
        dict(re.findall(r'(\w+)="([^"]*)"', line)).get(label, "")
        for line in text.splitlines()
        if line.startswith(name + "{")
    }


def invented_requests(send, count: int, offset: int = 0) -> None:
    """Requests an attacker could send unauthenticated: invented methods and paths."""
    for n in range(offset, offset + count):
        method = ("X" + "".join(chr(65 + int(d)) for d in str(n)))[:20]
        path = [f"/no/such/{n}", URL, "/metrics", f"/explain/{n}"][n % 4]
        send(method if n % 5 else "GET", path)


def test_metrics_stay_bounded_whatever_methods_and_paths_are_sent(obs_app):
    """Issue 24: each invented method was a new series (3,000 requests: 49 KB to 5 MB).
    Every label now comes from a closed set: the body stops growing."""
    client = obs_app.test_client()

    def send(method: str, path: str) -> None:
        assert client.open(path, method=method).status_code < 500

    invented_requests(send, 1000)
    after_1000 = len(client.get("/metrics").get_data())
    invented_requests(send, 2000, offset=1000)
    text = client.get("/metrics").get_data(as_text=True)
    assert len(text) < 200_000
    assert len(text) - after_1000 < 2_000  # only counts grow (a digit here and there)
    name = "cds_http_request_duration_seconds_count"
    assert label_values(text, name, "method") <= metrics.METHODS | {"other"}
    known = {rule.rule for rule in obs_app.url_map.iter_rules()}
    assert label_values(text, name, "endpoint") <= known | {"other"}
    assert metric(text, name, method="other", endpoint="other") >= 1000


def test_metrics_stay_bounded_under_gunicorn(tmp_path):
    """The same through gunicorn (methods as raw tokens, workers' metrics aggregated)."""
    import http.client

    from test_serving_faults import Gunicorn

    server = Gunicorn(tmp_path / "data")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

    def send(method: str, path: str) -> None:
        connection.request(method, path, headers={"Content-Length": "0"})
        response = connection.getresponse()
        response.read()
        assert response.status < 500, (method, path, response.status)

    def metrics_text() -> str:
        connection.request("GET", "/metrics")
        return connection.getresponse().read().decode()

    try:
        invented_requests(send, 1000)
        after_1000 = len(metrics_text())
        invented_requests(send, 2000, offset=1000)
        text = metrics_text()
    finally:
        connection.close()
        server.stop()
    print(f"/metrics after 1,000 invented requests {after_1000} B, after 3,000 {len(text)} B")
    assert len(text) < 200_000 and len(text) - after_1000 < 2_000
    name = "cds_http_request_duration_seconds_count"
    assert label_values(text, name, "method") <= metrics.METHODS | {"other"}
    assert metric(text, name, method="other") >= 2000


def test_label_rules():
    assert metrics.method_label("PATCH") == "PATCH"
    assert metrics.method_label("get") == metrics.method_label("BREW") == "other"
    assert metrics.status_label("503") == "503"
    assert metrics.status_label("499") == "4xx"  # not registered: its class
    assert metrics.status_label("999") == metrics.status_label("x") == "other"
    metrics.known_endpoints(["/known"])
    assert metrics.endpoint_label("/known") == "/known"
    assert metrics.endpoint_label("/unknown/1") == "other"
    rule = metrics.capped(2)
    assert [rule(v) for v in ("a", "b", "c", "a")] == ["a", "b", "other", "a"]
    # Every labelled metric applies its rules, keyword labels too.
    from prometheus_client import generate_latest

    name = "cds_fhir_fetch_duration_seconds_count"
    before = metric(generate_latest().decode(), name, outcome="other")
    metrics.FHIR_FETCH.labels(outcome="invented").observe(0.1)
    text = generate_latest().decode()
    assert metric(text, name, outcome="other") == before + 1
    assert 'outcome="invented"' not in text


# --------------------------------------------------------------------------- logs

FORBIDDEN_KEYS = {
    "patientId",
    "userId",
    "patient",
    "user",
    "name",
    "token",
    "access_token",
    "fhirAuthorization",
    "value",
    "birthDate",
}


def _all_strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *_all_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _all_strings(v)]
    return [str(value)]


@needs_synthea
def test_access_line_fields_and_no_phi(obs_app, gabriel_request, access_lines):
    gabriel_request = json.loads(json.dumps(gabriel_request))
    gabriel_request["fhirAuthorization"] = {  # a token must never be logged either
        "access_token": "secret-token-abc",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds-service",
    }
    gabriel_request["fhirServer"] = "https://fhir.example.org/r4"
    response = obs_app.test_client().post(URL, json=gabriel_request)
    assert response.status_code == 200
    lines = access_lines()
    assert len(lines) == 1
    line = lines[0]
    assert line["logger"] == "cds_service.access"
    assert line["hookInstance"] == gabriel_request["hookInstance"]
    assert line["service"] == "leg-cramp-referral"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert "nephrology" in line["routes"]
    assert line["cards"] == len(line["routes"])
    counts = line["resource_counts"]
    assert counts["Observation"] > 100 and counts["Condition"] > 10 and counts["Patient"] == 1
    assert line["resources"] >= sum(v for k, v in counts.items() if k != "Patient")

    # No identifiers, names, values or tokens anywhere in the line.
    raw = json.dumps(line)
    patient = gabriel_request["prefetch"]["patient"]
    forbidden = [
        gabriel_request["context"]["patientId"],
        gabriel_request["context"]["userId"],
        "Practitioner/example",
        "secret-token-abc",
        "fhir.example.org",
        patient["birthDate"],
    ]
    for name in patient.get("name", []):
        forbidden += [name.get("family", "")] + list(name.get("given", []))
    for identifier in patient.get("identifier", []):
        forbidden.append(identifier.get("value", ""))
    for text in forbidden:
        assert not text or text not in raw, f"{text!r} leaked into the access log"
    assert not FORBIDDEN_KEYS & set(line)
    # No lab value either: no number in the line except counts and the duration.
    numbers = {str(v) for k, v in line.items() if isinstance(v, (int, float))}
    numbers |= {str(v) for v in counts.values()}
    no_ts = json.dumps({k: v for k, v in line.items() if k != "ts"})
    for token in re.findall(r"\d+\.\d+", no_ts):
        assert token in numbers or token == str(line["duration_ms"])


def test_access_line_for_errors(obs_app, access_lines):
    client = obs_app.test_client()
    assert client.post(URL, data="{", content_type="application/json").status_code == 400
    assert (
        client.post(
            URL,
            json={
                "hook": "patient-view",
                "hookInstance": "hi-1",
                "context": {"patientId": "Patient-secret-9"},
            },
        ).status_code
        == 400
    )
    assert client.post("/cds-services/unknown", json={}).status_code == 404
    assert client.post(URL, data="x", content_type="text/plain").status_code == 415
    bad, invalid, unknown, unsupported = access_lines()
    assert bad["status"] == 400 and "hookInstance" not in bad  # body never parsed
    assert invalid["status"] == 400 and invalid["hookInstance"] == "hi-1"
    assert "Patient-secret-9" not in json.dumps(invalid)
    assert unknown["status"] == 404 and "service" not in unknown
    assert unsupported["status"] == 415
    for line in (bad, invalid, unknown, unsupported):
        assert line["endpoint"] == HOOK_ENDPOINT and line["duration_ms"] >= 0


def test_access_line_for_unexpected_errors(tmp_path):
    settings = Settings.from_env({}, data_dir=tmp_path)

    class Broken:
        def __init__(self):
            self.settings = settings

        services = SERVICES

        def call(self, service_id, payload, store=None, client=None):
            raise RuntimeError("boom with Patient/123 inside")

        def discovery(self):
            return {"services": []}

    app = create_app(settings, service=Broken())
    stream = io.StringIO()
    logs.configure("INFO", stream=stream)  # after create_app, which installs its own
    try:
        response = app.test_client().post(
            URL,
            json={
                "hook": "patient-view",
                "hookInstance": "h2",
                "context": {"patientId": "p", "userId": "u"},
            },
        )
    finally:
        logs.configure("INFO")
    assert response.status_code == 500
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines() if "cds_service.access" in x]
    assert line["status"] == 500 and line["hookInstance"] == "h2"
    assert line["error"] == "RuntimeError" and "Patient/123" not in json.dumps(line)


def test_log_level_setting(tmp_path):
    import logging

    try:
        create_app(Settings.from_env({"CDS_LOG_LEVEL": "WARNING"}, data_dir=tmp_path))
        assert logging.getLogger().level == logging.WARNING
        assert not logging.getLogger(logs.ACCESS_LOGGER).isEnabledFor(logging.INFO)
        create_app(Settings.from_env({"CDS_LOG_LEVEL": "debug"}, data_dir=tmp_path))
        assert logging.getLogger().level == logging.DEBUG
    finally:
        logs.configure("INFO")
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "_cds_json", False)]
    assert len(handlers) == 1  # configure replaces, never stacks handlers


def test_json_formatter_drops_non_whitelisted_fields():
    stream = io.StringIO()
    logs.configure("INFO", stream=stream)
    try:
        logs.access(
            {"status": 200, "patientId": "p-1", "userId": "Practitioner/x", "hookInstance": "h"}
        )
    finally:
        logs.configure("INFO")
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["status"] == 200 and line["hookInstance"] == "h"
    assert "patientId" not in line and "userId" not in line


# --------------------------------------------------------------------------- gunicorn


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@needs_synthea
def test_metrics_aggregate_two_gunicorn_workers(tmp_path, gabriel_request):
    port = _free_port()
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # must be wiped at start
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(
        {
            "CDS_PORT": str(port),
            "CDS_HOST": "127.0.0.1",
            "CDS_WORKERS": "2",
            "CDS_TODAY": "2026-11-24",
            "CDS_AUTH_MODE": "off",
            "CDS_DATA_DIR": str(tmp_path / "data"),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
    )
    gunicorn = Path(sys.executable).parent / "gunicorn"
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(gunicorn),
                "-c",
                "python:cds_service.web.gunicorn_conf",
                "cds_service.web.app:create_app()",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline:
            try:
                children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
                workers = children.split()
                if len(workers) == 2 and requests.get(base + "/healthz", timeout=2).ok:
                    break
            except (OSError, requests.ConnectionError):
                pass
            time.sleep(0.2)
        else:
            pytest.fail("gunicorn did not start: " + log_path.read_text()[-2000:])
        assert not (metrics_dir / "counter_999999.db").exists()

        # Concurrent requests on separate connections until both workers have served some
        # (each worker writes its own files, named by pid); bounded to 8 rounds.
        body = json.dumps(gabriel_request)
        sent = 0
        served: set[str] = set()

        def post(_):
            return requests.post(
                base + URL,
                data=body,
                timeout=60,
                headers={"Content-Type": "application/json", "Connection": "close"},
            )

        with ThreadPoolExecutor(4) as pool:
            for _ in range(8):
                for response in pool.map(post, range(4)):
                    assert response.status_code == 200
                    assert response.headers["Server-Timing"].startswith("app;dur=")
                    assert "nephrology" in [
                        c["source"]["topic"]["code"] for c in response.json()["cards"]
                    ]
                    sent += 1
                served = {
                    re.search(r"_(\d+)\.db$", p.name).group(1)
                    for p in metrics_dir.glob("histogram_*.db")
                }
                if served >= set(workers):
                    break
        assert served == set(workers), "one worker took every request; cannot check the sum"
        # Requests are counted just after their response is sent: wait (bounded) for the last.
        settle = time.monotonic() + 5
        while time.monotonic() < settle:
            text = requests.get(base + "/metrics", timeout=5, headers={"Connection": "close"}).text
            if (
                metric(
                    text,
                    "cds_http_request_duration_seconds_count",
                    endpoint=HOOK_ENDPOINT,
                    status="200",
                )
                == sent
            ):
                break
            time.sleep(0.05)
        # Every answer of /metrics (whichever worker gives it) reports the sum of both.
        for _ in range(4):
            text = requests.get(base + "/metrics", timeout=5, headers={"Connection": "close"}).text
            assert (
                metric(
                    text,
                    "cds_http_request_duration_seconds_count",
                    endpoint=HOOK_ENDPOINT,
                    status="200",
                )
                == sent
            )
            assert metric(text, "cds_cards_issued_total", route="nephrology") == sent
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
