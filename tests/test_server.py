"""The real server: gunicorn started as `make run` does, spoken to over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from cds_service.hooks import validator
from conftest import minimal_request

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    env = {**os.environ, "CDS_PORT": str(port), "CDS_HOST": "127.0.0.1", "CDS_WORKERS": "1",
           "CDS_TODAY": "2026-11-24", "CDS_AUTH_MODE": "off",
           "CDS_DATA_DIR": str(tmp_path_factory.mktemp("data"))}
    gunicorn = Path(sys.executable).parent / "gunicorn"
    process = subprocess.Popen([str(gunicorn), "-c", "python:cds_service.gunicorn_conf",
                                "cds_service.app:create_app()"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("gunicorn did not start: " + process.stderr.read().decode()[-2000:])
    yield base
    process.terminate()
    process.wait(timeout=10)


def test_discovery_over_http(server):
    response = requests.get(server + "/cds-services", timeout=5)
    assert response.status_code == 200
    validator("discovery").validate(response.json())


def test_example_request_over_http(server):
    example = ROOT / "fhir_examples" / "nephrology-ckd-stage-4.json"
    response = requests.post(server + "/cds-services/leg-cramp-referral",
                             data=example.read_bytes(),
                             headers={"Content-Type": "application/json"}, timeout=5)
    assert response.status_code == 200
    body = response.json()
    validator("cds-response").validate(body)
    assert [c["source"]["topic"]["code"] for c in body["cards"]][:1] == ["nephrology"]


def test_errors_over_http(server):
    url = server + "/cds-services/leg-cramp-referral"
    assert requests.post(url, data="{", headers={"Content-Type": "application/json"},
                         timeout=5).status_code == 400
    assert requests.post(url, data="x", headers={"Content-Type": "text/plain"},
                         timeout=5).status_code == 415
    assert requests.get(url, timeout=5).status_code == 405
    response = requests.post(url, json=minimal_request(), timeout=5)
    assert response.status_code == 200 and response.json() == {"cards": []}
