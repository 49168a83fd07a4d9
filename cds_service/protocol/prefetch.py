"""Gather the patient's resources: from prefetch, or fetched from ``fhirServer`` when missing.

A prefetch key that is absent, ``null`` or an OperationOutcome means the client could not
fill it, so the service runs the query itself. Prefetched and fetched data end up in the
same flat list of resources, so everything downstream treats them alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote

from cds_service.engine.criteria.medication import STATEMENT_TAKEN
from cds_service.errors import MissingData
from cds_service.protocol.fhir_json import FhirNode, is_object

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
        PrefetchKey(
            "medications",
            f"MedicationRequest?patient={patient}&status=active,on-hold"
            "&_include=MedicationRequest:medication",
            True,
        ),
        # What the patient is recorded as taking, whoever prescribed it (not an order), with
        # the Medications the statements reference. Optional: US Core does not require the
        # resource, so a client or server without it still gets every other card.
        PrefetchKey(
            "medicationstatements",
            f"MedicationStatement?patient={patient}&status={','.join(STATEMENT_TAKEN)}"
            "&_include=MedicationStatement:medication",
            False,
        ),
        PrefetchKey("servicerequests", f"ServiceRequest?patient={patient}&status=active", False),
    ]


def resources_in(value: dict) -> list[dict]:
    """The resources a prefetch value holds: a Bundle's entries, or the resource itself.

    Entries that are not objects are dropped; an OperationOutcome entry (a search warning)
    is kept, like any resource type no rule reads.
    """
    if value.get("resourceType") == "Bundle":
        entries = value.get("entry")
        if type(entries) is not list:
            return []
        if isinstance(value, FhirNode):  # typed entries: each resource is a FhirNode or None
            return [entry.resource for entry in entries if entry.resource is not None]
        resources = [entry.get("resource") for entry in entries if type(entry) is dict]
        return [resource for resource in resources if type(resource) is dict]
    return [value]


def next_link(value: dict) -> str | None:
    if value.get("resourceType") != "Bundle":
        return None
    links = value.get("link")
    for link in links if isinstance(links, list) else ():
        if (
            isinstance(link, dict)
            and link.get("relation") == "next"
            and isinstance(link.get("url"), str)
        ):
            return link["url"]
    return None


def _encode(value: str) -> str:
    """Percent-encode a token value: an id must not add query parameters or "../" segments.

    ``/`` survives so that ``{{context.userId}}`` stays a ``Type/id`` reference.
    """
    return "/".join(
        part.replace(".", "%2E") if part in (".", "..") else quote(part, safe="")
        for part in value.split("/")
    )


def resolve(template: str, context: dict) -> str:
    """Fill the ``{{context.x}}`` and user tokens of a template from the hook context."""
    url = template
    for key, value in context.items():
        if isinstance(value, str):
            url = url.replace("{{context." + key + "}}", _encode(value))
    user = context.get("userId") if isinstance(context.get("userId"), str) else ""
    kind, _, user_id = user.partition("/")
    for token, wanted in (
        ("userPractitionerId", "Practitioner"),
        ("userPractitionerRoleId", "PractitionerRole"),
        ("userPatientId", "Patient"),
        ("userRelatedPersonId", "RelatedPerson"),
    ):
        url = url.replace("{{" + token + "}}", _encode(user_id) if kind == wanted else "")
    return url


def gather(request: dict, keys: list[PrefetchKey], fetcher) -> list[dict]:
    """All resources for the hook call; raises 412 when required data cannot be had.

    ``fetcher`` runs the queries for missing keys and the next pages of prefetched
    bundles: ``fetcher(fhir_server, token, {key: relative_or_absolute_url}) ->
    {key: list_of_resources | FetchError}``.
    """
    prefetch = request.get("prefetch") or {}
    resources: list[dict] = []
    queries: dict[str, str] = {}
    continuations: dict[str, str] = {}
    for key in keys:
        value = prefetch.get(key.name)
        if is_object(value) and value.get("resourceType") not in (None, "OperationOutcome"):
            resources.extend(resources_in(value))
            more = next_link(value)
            if more:
                continuations[key.name] = more
        else:
            queries[key.name] = resolve(key.template, request["context"])
    if not queries and not continuations:
        return resources
    required = {k.name for k in keys if k.required}
    wanted = {**queries, **{k + "#next": v for k, v in continuations.items()}}
    server = request.get("fhirServer")
    if server:
        token = (request.get("fhirAuthorization") or {}).get("access_token")
        results = fetcher(server, token, wanted)
    else:
        results = {}
    failures = []
    for name in wanted:
        key_name = name.split("#")[0]
        result = results.get(
            name, "not fetched" if server else "not prefetched and no fhirServer given"
        )
        if isinstance(result, list):
            resources.extend(result)
            continue
        what = f"{key_name}, next page" if name.endswith("#next") else key_name
        if key_name in required:
            failures.append(f"{what} ({result})")
        else:  # an optional key only sharpens the advice: go on without it, but say so
            log.warning(
                "optional prefetch key %s is missing and could not be fetched: %s", what, result
            )
    if failures:  # the reasons hold no URL, token or patient data: safe to log and return
        message = (
            "Required prefetch data could not be obtained: " + "; ".join(sorted(failures)) + "."
        )
        log.warning("%s", message)
        raise MissingData(message)
    return resources
