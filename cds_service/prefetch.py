"""Gather the patient's resources: from prefetch, or fetched from ``fhirServer`` when missing.

A prefetch key that is absent, ``null`` or an OperationOutcome means the client could not
fill it, so the service runs the query itself. Prefetched and fetched data end up in the
same flat list of resources, so everything downstream treats them alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cds_service.errors import CdsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefetchKey:
    name: str
    template: str
    required: bool


def prefetch_keys(observation_codes) -> list[PrefetchKey]:
    """The discovery templates: only ``{{context.patientId}}``, which every client resolves."""
    codes = ",".join(f"{c.system}|{c.code}" for c in observation_codes)
    patient = "{{context.patientId}}"
    return [
        PrefetchKey("patient", f"Patient/{patient}", True),
        PrefetchKey("conditions", f"Condition?patient={patient}", True),
        PrefetchKey("observations", f"Observation?patient={patient}&code={codes}", True),
        PrefetchKey("procedures", f"Procedure?patient={patient}", True),
        PrefetchKey("medications", f"MedicationRequest?patient={patient}&status=active,on-hold", True),
        PrefetchKey("servicerequests", f"ServiceRequest?patient={patient}&status=active", False),
    ]


def resources_in(value: dict) -> list[dict]:
    """The resources a prefetch value holds: a Bundle's entries, or the resource itself."""
    if value.get("resourceType") == "Bundle":
        out = []
        for entry in value.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") != "OperationOutcome":
                out.append(resource)
        return out
    return [value]


def next_link(value: dict) -> str | None:
    if value.get("resourceType") != "Bundle":
        return None
    for link in value.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


def resolve(template: str, context: dict) -> str:
    """Fill the ``{{context.x}}`` and user tokens of a template from the hook context."""
    url = template
    for key, value in context.items():
        if isinstance(value, str):
            url = url.replace("{{context.%s}}" % key, value)
    user = context.get("userId") if isinstance(context.get("userId"), str) else ""
    kind, _, user_id = user.partition("/")
    for token, wanted in (("userPractitionerId", "Practitioner"),
                          ("userPractitionerRoleId", "PractitionerRole"),
                          ("userPatientId", "Patient"), ("userRelatedPersonId", "RelatedPerson")):
        url = url.replace("{{%s}}" % token, user_id if kind == wanted else "")
    return url


def gather(request: dict, keys: list[PrefetchKey], fetcher) -> list[dict]:
    """All resources for the hook call; raises 412 when required data cannot be had.

    ``fetcher`` runs the queries for missing keys and the next pages of prefetched
    bundles: ``fetcher(fhir_server, token, {key: relative_or_absolute_url}) ->
    {key: list_of_resources | FetchFailure}``.
    """
    prefetch = request.get("prefetch") or {}
    resources: list[dict] = []
    queries: dict[str, str] = {}
    continuations: dict[str, str] = {}
    for key in keys:
        value = prefetch.get(key.name)
        if isinstance(value, dict) and value.get("resourceType") not in (None, "OperationOutcome"):
            resources.extend(resources_in(value))
            more = next_link(value)
            if more:
                continuations[key.name] = more
        else:
            queries[key.name] = resolve(key.template, request["context"])
    if not queries and not continuations:
        return resources
    required = {k.name for k in keys if k.required}
    server = request.get("fhirServer")
    if not server:
        missing = sorted(set(queries) & required)
        if missing:
            raise CdsError(412, "Required prefetch data is missing and no fhirServer was given "
                                f"to fetch it from: {', '.join(missing)}.")
        for name in sorted(set(queries) | set(continuations)):
            log.warning("optional prefetch key %s is missing and cannot be fetched", name)
        return resources
    token = (request.get("fhirAuthorization") or {}).get("access_token")
    results = fetcher(server, token, {**queries, **{k + "#next": v for k, v in continuations.items()}})
    failures = []
    for name, result in results.items():
        key_name = name.split("#")[0]
        if isinstance(result, list):
            resources.extend(result)
        elif key_name in required:
            failures.append(f"{key_name} ({result})")
        else:
            log.warning("optional prefetch key %s could not be fetched: %s", key_name, result)
    if failures:
        raise CdsError(412, "Required data could not be fetched from the FHIR server: "
                            + "; ".join(sorted(failures)) + ".")
    return resources
