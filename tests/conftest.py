"""Shared fixtures: settings with a fixed clinical 'today', the app, a minimal request."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cds_service.config import Settings  # noqa: E402
from cds_service.web.app import create_app  # noqa: E402

TODAY = "2026-11-24"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.from_env({}, today=TODAY, data_dir=tmp_path, auth_mode="off")


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    app.extensions["cds_store"].close()  # no store left opening in the background


@pytest.fixture
def client(app):
    return app.test_client()


def empty_bundle() -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "entry": []}


def minimal_request(patient_id: str = "p1", resources: list[dict] | None = None) -> dict:
    """A valid patient-view request with every prefetch key filled (optionally with data)."""
    prefetch = {
        key: empty_bundle()
        for key in ("conditions", "observations", "procedures", "medications", "servicerequests")
    }
    keys = {
        "Condition": "conditions",
        "Observation": "observations",
        "Procedure": "procedures",
        "MedicationRequest": "medications",
        "ServiceRequest": "servicerequests",
    }
    for resource in resources or []:
        prefetch[keys[resource["resourceType"]]]["entry"].append({"resource": resource})
    prefetch["patient"] = {
        "resourceType": "Patient",
        "id": patient_id,
        "gender": "female",
        "birthDate": "1960-05-01",
    }
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
        "prefetch": prefetch,
    }


class ClosingTestClient(FlaskClient):
    """Flask's test client, closing each response as a WSGI server does once it is sent, so
    the bookkeeping done then (metrics, access line, card records) has happened when a test
    looks."""

    def open(self, *args, buffered: bool = True, **kwargs):
        return super().open(*args, buffered=buffered, **kwargs)


Flask.test_client_class = ClosingTestClient
