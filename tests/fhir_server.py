"""A small FHIR R4 server for tests, on a real loopback HTTP server (pytest-httpserver).

It answers what the service's templates ask for, as a FHIR server would: reads
(``Type/id``), type searches with ``patient=``, token search (``system|code``, comma = OR),
``status=`` and paging with ``_count`` and absolute ``next`` links. It checks the Bearer
token and records every request, so tests can assert what the service sent. ``faults``
lets a test replace the answer for one resource type (hang, 401, bad JSON, ...).
fhirsnake (PyPI) was considered: it has reads but no search parameters or paging.
"""

from __future__ import annotations

import json
import re
import threading
from urllib.parse import urlencode

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

FHIR_JSON = "application/fhir+json"
SEARCH_PARAMS = {"patient", "code", "status", "_count", "_offset", "_include"}


def fhir_response(body, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type=FHIR_JSON)


def outcome(code: str, text: str) -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "details": {"text": text}}],
    }


def _token_match(resource: dict, element: str, tokens: list[str]) -> bool:
    codings = (resource.get(element) or {}).get("coding") or []
    for token in tokens:
        system, bar, code = token.rpartition("|")
        for coding in codings:
            if coding.get("code") == code and (not bar or coding.get("system") == system):
                return True
    return False


def _subject(resource: dict) -> str | None:
    for element in ("subject", "patient"):
        ref = (resource.get(element) or {}).get("reference")
        if ref:
            return ref
    return None


class FhirServer:
    """Serve ``resources`` under ``<httpserver>/fhir``; ``base`` is the fhirServer to use."""

    def __init__(
        self,
        httpserver: HTTPServer,
        resources: list[dict],
        token: str | None = "s3cret-token",
        page_size: int = 100,
    ):
        self.httpserver = httpserver
        self.base = httpserver.url_for("/fhir")
        self.token = token
        self.page_size = page_size
        self.by_type: dict[str, list[dict]] = {}
        for resource in resources:
            self.by_type.setdefault(resource["resourceType"], []).append(resource)
        self.requests: list[dict] = []
        self.faults: dict[str, object] = {}  # resource type -> handler(request) -> Response
        self.release = threading.Event()  # lets "hanging" handlers end at teardown
        self._lock = threading.Lock()
        httpserver.expect_request(re.compile(r"^/fhir(/.*)?$")).respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(
                {
                    "path": request.path,
                    "args": request.args.to_dict(flat=False),
                    "authorization": request.headers.get("Authorization"),
                    "accept": request.headers.get("Accept"),
                }
            )
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return fhir_response(outcome("login", "invalid or missing token"), 401)
        parts = request.path.strip("/").split("/")[1:]
        fault = self.faults.get(parts[0] if parts else "")
        if fault is not None:
            return fault(request)
        if len(parts) == 2:
            return self.read(*parts)
        if len(parts) == 1:
            return self.search(parts[0], request)
        return fhir_response(outcome("not-supported", "unsupported interaction"), 400)

    def read(self, rtype: str, rid: str) -> Response:
        for resource in self.by_type.get(rtype, []):
            if resource.get("id") == rid:
                return fhir_response(resource)
        return fhir_response(outcome("not-found", "no such resource"), 404)

    def search(self, rtype: str, request: Request) -> Response:
        args = request.args
        unknown = set(args) - SEARCH_PARAMS
        if unknown:
            return fhir_response(
                outcome("not-supported", f"unknown parameter {sorted(unknown)}"), 400
            )
        matches = list(self.by_type.get(rtype, []))
        if "patient" in args:
            wanted = args["patient"] if "/" in args["patient"] else "Patient/" + args["patient"]
            matches = [r for r in matches if _subject(r) == wanted]
        if "code" in args:
            matches = [r for r in matches if _token_match(r, "code", args["code"].split(","))]
        if "status" in args:
            matches = [r for r in matches if r.get("status") in args["status"].split(",")]
        count = int(args.get("_count", self.page_size))
        offset = int(args.get("_offset", 0))
        page = matches[offset : offset + count]
        query = {k: v for k, v in args.items() if k != "_offset"}
        links = [
            {
                "relation": "self",
                "url": f"{self.base}/{rtype}?{urlencode({**query, '_offset': offset})}",
            }
        ]
        if offset + count < len(matches):
            links.append(
                {
                    "relation": "next",
                    "url": f"{self.base}/{rtype}?{urlencode({**query, '_offset': offset + count})}",
                }
            )
        entries = [
            {
                "fullUrl": f"{self.base}/{rtype}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in page
        ]
        if args.get("_include") == f"{rtype}:medication":  # MedicationRequest or -Statement
            entries += [
                {
                    "fullUrl": f"{self.base}/{m['resourceType']}/{m['id']}",
                    "resource": m,
                    "search": {"mode": "include"},
                }
                for m in self.included_medications(page)
            ]
        return fhir_response(
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(matches),
                "link": links,
                "entry": entries,
            }
        )

    def included_medications(self, page: list[dict]) -> list[dict]:
        """The Medication resources the page's requests or statements reference (``_include``)."""
        wanted = {(r.get("medicationReference") or {}).get("reference") for r in page}
        return [
            m for m in self.by_type.get("Medication", []) if f"Medication/{m.get('id')}" in wanted
        ]

    def first_page(self, rtype: str, query: str) -> dict:
        """What the server answers to ``rtype?query``: a prefetch value that has a next link."""
        request = Request.from_values(path=f"/fhir/{rtype}", query_string=query)
        return json.loads(self.search(rtype, request).get_data())
