"""What the real CDS Hooks sandbox needs around it on loopback, for tests/test_sandbox_browser.py.

- ``StaticSite``: the sandbox's built files (``npm run build``) served by the standard
  library's HTTP server in a thread, as any static host would.
- ``BrowserFhirServer``: tests/fhir_server.py's FHIR server as a browser reaches it: CORS
  headers on every answer (the sandbox reads the chart from the page), ``/metadata``, and the
  ``POST Type/_search`` form the sandbox tries before a plain GET search.
- ``sandbox_jwks``: the public half of the key the build signs its JWTs with, read from the
  bundle, so the service verifies them offline (``CDS_JWKS_FILE``) instead of fetching the
  sandbox's ``jku`` from the internet.
- ``leg_cramp_chart``: a patient with leg cramps, PAD with a low ABI, a low potassium and a
  CK over 1000 U/L, dated from today (the sandbox writes today's date on the orders it drafts).
"""

from __future__ import annotations

import functools
import json
import re
import threading
from datetime import date, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fhir_server import FhirServer, fhir_response
from synthea import condition
from werkzeug import Request, Response

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Accept, Authorization, Content-Type",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
}


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the standard library's name)
        pass


class StaticSite:
    """``with StaticSite(directory) as site:`` serves it at ``site.base`` (127.0.0.1)."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietFiles, directory=str(directory))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="sandbox-site")

    def __enter__(self) -> StaticSite:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.httpd.shutdown()
        self.thread.join(timeout=10)
        self.httpd.server_close()


class BrowserFhirServer(FhirServer):
    """An open FHIR server (no token: the sandbox sends none) that a web page may read."""

    def __init__(self, httpserver, resources: list[dict]) -> None:
        super().__init__(httpserver, resources, token=None)

    def handle(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            response = Response(status=204)
        elif request.path.rstrip("/") == "/fhir/metadata":
            response = fhir_response(
                {
                    "resourceType": "CapabilityStatement",
                    "status": "active",
                    "kind": "instance",
                    "fhirVersion": "4.0.1",
                    "format": ["json"],
                }
            )
        elif request.method == "POST" and request.path.endswith("/_search"):
            form = request.get_data(as_text=True)  # application/x-www-form-urlencoded
            response = super().handle(
                Request.from_values(
                    path=request.path.removesuffix("/_search"),
                    query_string=form,
                    headers=dict(request.headers),
                )
            )
        else:
            response = super().handle(request)
        response.headers.update(CORS_HEADERS)
        return response


def sandbox_jwks(build: Path) -> dict:
    """The JWK Set the sandbox publishes at its ``jku``, derived from the build's own key.

    The sandbox signs every call with a private key shipped in its bundle
    (src/retrieve-data-helpers/jwt-generator.js); its public half is what
    https://sandbox.cds-hooks.org/.well-known/jwks.json serves."""
    bundle = (build / "app.bundle.js").read_text(encoding="utf-8", errors="replace")
    pem = re.search(
        r"-----BEGIN (?:EC )?PRIVATE KEY-----.*?-----END (?:EC )?PRIVATE KEY-----", bundle
    )
    header = re.search(r'kid:"([^"]+)",jku:"([^"]+)"', bundle)
    if not pem or not header:
        raise AssertionError(f"{build}/app.bundle.js: no signing key or JWT header found")
    key = load_pem_private_key(pem.group(0).replace("\\n", "\n").encode(), password=None)
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": header.group(1), "use": "sig", "alg": "ES384"})
    return {"keys": [public]}


def _coded(system: str, code: str, text: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": text}], "text": text}


def _condition(patient: str, rid: str, code: str, text: str, onset: date) -> dict:
    coded = _coded("http://snomed.info/sct", code, text)
    return condition(patient, f"{patient}-{rid}", coded, onset.isoformat())


def _result(patient: str, rid: str, code: tuple[str, str, str], value, unit, on: date) -> dict:
    system, number, text = code
    return {
        "resourceType": "Observation",
        "id": f"{patient}-{rid}",
        "status": "final",
        "code": _coded(system, number, text),
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": on.isoformat(),
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


LOINC = "http://loinc.org"
LABS = [  # (id, (system, code, text), value, UCUM unit, drawn days ago)
    ("potassium", (LOINC, "2823-3", "Potassium"), 3.1, "mmol/L", 5),
    ("magnesium", (LOINC, "2601-3", "Magnesium"), 0.8, "mmol/L", 5),
    ("sodium", (LOINC, "2951-2", "Sodium"), 139, "mmol/L", 5),
    ("calcium", (LOINC, "17861-6", "Calcium"), 9.3, "mg/dL", 5),
    ("creatinine", (LOINC, "2160-0", "Creatinine"), 0.9, "mg/dL", 5),
    ("glucose", (LOINC, "2345-7", "Glucose"), 96, "mg/dL", 5),
    ("ck", (LOINC, "2157-6", "Creatine kinase"), 1450, "U/L", 1),  # an urgent red flag
]


def leg_cramp_chart(patient: str, today: date | None = None) -> list[dict]:
    """Leg cramps and claudication on the problem list, an ABI of 0.72, a potassium of
    3.1 mmol/L five days ago and a CK of 1450 U/L yesterday; no medicines yet."""
    today = today or date.today()
    chart = [
        {
            "resourceType": "Patient",
            "id": patient,
            "name": [{"family": "Sandbox", "given": ["Leg-cramp"]}],
            "gender": "male",
            "birthDate": "1958-04-02",
        },
        _condition(patient, "cramps", "449918009", "Cramp in lower leg", today - timedelta(50)),
        _condition(
            patient, "claudication", "63491006", "Intermittent claudication", today - timedelta(90)
        ),
        _result(
            patient,
            "abi",
            ("http://snomed.info/sct", "446841001", "Ankle brachial pressure index"),
            0.72,
            "1",
            today - timedelta(days=40),
        ),
    ]
    chart += [
        _result(patient, rid, code, value, unit, today - timedelta(days=ago))
        for rid, code, value, unit, ago in LABS
    ]
    return chart
