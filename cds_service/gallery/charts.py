"""The charts a gallery shows, each as the patient-view request an EHR would send today.

Three kinds: the examples (``fhir_examples/``, dates moved as ``cds-service example`` moves
them), the shared synthetic charts and any directory of FHIR bundles. A bundle is answered
as a FHIR server answers the service's prefetch templates (the resource type, its status
filter and, for observations, the codes the rules read), with ``urn:uuid:`` references
rewritten to ``Type/id``. A chart whose newest entry is more than a week old is moved, every
date alike (birth date too, so the age is the one recorded), until that entry is a week old:
an export from years ago is read as if the patient were seen a week after their last visit.
A chart with no leg-cramp problem gets one recorded today (none of the Synthea charts has
one), and its key data say it was added.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import parse_qs

from cds_service import examples
from cds_service.engine import RuleSet
from cds_service.engine.terminology import ICD10CM
from cds_service.protocol.prefetch import PrefetchKey

# Where ``cds-service gallery`` looks for the shared charts unless told: beside the checkout.
DEFAULT_SHARED_CHARTS = Path("../shared/fhir-real")
# The clinical dates that say when a chart was last added to (not a validity end in the future).
CLINICAL_DATES = (
    "effectiveDateTime",
    "issued",
    "onsetDateTime",
    "recordedDate",
    "authoredOn",
    "performedDateTime",
)
CLINICAL_PERIODS = ("period", "performedPeriod", "effectivePeriod")
RECENT = timedelta(days=7)
# Recorded when a chart has none: ICD-10-CM R25.2, a member of the gate (cards/common.yaml).
ADDED_CRAMP = {"system": ICD10CM, "code": "R25.2", "display": "Cramp and spasm"}
_URN = re.compile(r'"(urn:uuid:[0-9a-fA-F-]+)"')


@dataclass
class Chart:
    """One gallery section's input: where it came from and the request built from it."""

    title: str
    origin: str  # "example", "shared chart" or the directory given
    request: dict
    moved_days: int = 0  # how far its dates were moved forward
    cramp_added: bool = False


def example_charts(today: date) -> list[Chart]:
    return [Chart(name, "example", examples.request(name, today)) for name in examples.names()]


def bundle_charts(
    directory: Path, origin: str, keys: list[PrefetchKey], ruleset: RuleSet, today: date
) -> list[Chart]:
    """Every ``*.json`` under ``directory`` that is a FHIR Bundle with a Patient, or a hook
    request; other JSON files are skipped, an absent directory gives none."""
    charts = []
    for path in sorted(directory.rglob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "hook" in data and "context" in data:
            charts.append(Chart(path.stem, origin, data))
        elif isinstance(data, dict) and data.get("resourceType") == "Bundle":
            resources = _resources(data)
            if any(r.get("resourceType") == "Patient" for r in resources):
                charts.append(_chart(path.stem, origin, resources, keys, ruleset, today))
    return charts


def _resources(bundle: dict) -> list[dict]:
    """The bundle's resources, with ``urn:uuid:`` references as a server would write them."""
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    ids = {
        e["fullUrl"]: f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}"
        for e in entries
        if isinstance(e.get("resource"), dict) and str(e.get("fullUrl", "")).startswith("urn:")
    }
    text = json.dumps([e["resource"] for e in entries if isinstance(e.get("resource"), dict)])
    text = _URN.sub(lambda m: json.dumps(ids.get(m.group(1), m.group(1))), text)
    return [r for r in json.loads(text) if isinstance(r, dict)]


def _chart(
    name: str,
    origin: str,
    resources: list[dict],
    keys: list[PrefetchKey],
    ruleset: RuleSet,
    today: date,
) -> Chart:
    patient = next(r for r in resources if r.get("resourceType") == "Patient")
    answered = {key.name: _answer(key, resources) for key in keys if key.name != "patient"}
    newest = newest_date(resources)  # over every entry, as tests/test_real_data.py reads it
    days = max(0, (today - RECENT - newest).days) if newest else 0
    shift = examples.Shift.between(today - timedelta(days=days), today)
    prefetch: dict = {"patient": shift.resource(patient)}
    for key, found in answered.items():
        prefetch[key] = _searchset([shift.resource(r) for r in found])
    cramp_added = not any(_is_cramp(r, ruleset) for r in answered.get("conditions", []))
    if cramp_added:
        prefetch["conditions"]["entry"].append(
            {"resource": _cramp(str(patient.get("id", "")), today)}
        )
    request = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/gallery", "patientId": patient.get("id", "")},
        "prefetch": prefetch,
    }
    return Chart(name, origin, request, days, cramp_added)


def _searchset(resources: list) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def _answer(key: PrefetchKey, resources: list[dict]) -> list[dict]:
    """What a FHIR server returns for the key's search: its type, status and code filters,
    and the Medications it includes."""
    rtype, _, query = key.template.partition("?")
    params = parse_qs(query)
    statuses = set(",".join(params.get("status", [])).split(",")) - {""}
    codes = set(",".join(params.get("code", [])).split(",")) - {""}
    found = [
        r
        for r in resources
        if r.get("resourceType") == rtype
        and (not statuses or r.get("status") in statuses)
        and (not codes or codes & _codes(r))
    ]
    if "_include" in params:
        found += [r for r in resources if r.get("resourceType") == "Medication"]
    return found


def _codes(resource: dict) -> set[str]:
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    return {f"{c.get('system')}|{c.get('code')}" for c in codings or [] if isinstance(c, dict)}


def _is_cramp(condition: dict, ruleset: RuleSet) -> bool:
    code = condition.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    return any(
        isinstance(c, dict) and ruleset.gate.match(str(c.get("system")), str(c.get("code")))
        for c in codings or []
    )


def _cramp(patient_id: str, today: date) -> dict:
    terminology = "http://terminology.hl7.org/CodeSystem/"
    return {
        "resourceType": "Condition",
        "id": "gallery-leg-cramps",
        "clinicalStatus": {
            "coding": [{"system": terminology + "condition-clinical", "code": "active"}]
        },
        "verificationStatus": {
            "coding": [{"system": terminology + "condition-ver-status", "code": "confirmed"}]
        },
        "code": {"coding": [ADDED_CRAMP], "text": "Leg cramps (added for the gallery)"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "onsetDateTime": today.isoformat(),
        "recordedDate": today.isoformat(),
    }


def newest_date(resources: Iterable[dict]) -> date | None:
    """The newest clinical date in a chart: its "now" when it was exported."""
    newest = ""
    for resource in resources:
        values = [resource.get(name) for name in CLINICAL_DATES]
        for name in CLINICAL_PERIODS:
            period = resource.get(name)
            if isinstance(period, dict):
                values += [period.get("start"), period.get("end")]
        for value in values:
            if isinstance(value, str) and value[:10] > newest:
                newest = value[:10]
    try:
        return date.fromisoformat(newest) if newest else None
    except ValueError:
        return None
