"""The patient record: every resource from prefetch or the FHIR server, read on demand.

Resources stay as decoded: plain dicts, or ``fhir_json.FhirNode`` structs that read the same
way. A resource type is indexed when a rule first asks for it, and only under the value sets
the rules use (``terminology.CodeIndex``), so the codes no rule reads cost one lookup. Only
the resources a rule actually uses as evidence are validated with the ``fhir.resources.R4B``
models (``Record.is_valid``), which keeps the hot path near the cost of JSON parsing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, tzinfo
from itertools import groupby
from operator import attrgetter, itemgetter
from typing import Any

from cds_service.engine.dates import Read, Reader
from cds_service.engine.reading import component_views, died_by
from cds_service.engine.results import LabResults
from cds_service.engine.shapes import Resource
from cds_service.engine.terminology import CodeIndex, Concept, Owners, ValueSet
from cds_service.engine.validation import VALIDATED_OF, VALIDATED_TYPES, validates, well_formed

log = logging.getLogger(__name__)

INDEXED_TYPES = ("Condition", "Observation", "Procedure", "ServiceRequest")  # coded, by value set
# What ``Record.present`` holds: (resource type, value set), or (type, None) for a type received.
Presence = tuple[str, ValueSet | None]
Matched = list[tuple[Resource, Concept]]  # resources, each with the concept it matched


_type_attribute = attrgetter("resourceType")  # a decoded FhirNode's, read in C
_second = itemgetter(1)


def _resource_type(resource: Resource) -> object:
    if type(resource) is dict:
        return resource.get("resourceType")
    return getattr(resource, "resourceType", None)  # a decoded FhirNode


def _group_by_type(resources: Iterable[Resource], received: dict[str, list[Resource]]) -> None:
    """File each resource under its ``resourceType`` (a string; others are dropped).

    The types are read in C when every resource is a decoded ``FhirNode`` (the prefetch
    path), and resources come in runs of one type (a Bundle per prefetch key), so the
    Python work is per run, not per resource: a tenth of a per-resource loop at 200.
    """
    resources = resources if isinstance(resources, list) else list(resources)
    try:
        kinds = list(map(_type_attribute, resources))
    except AttributeError:  # plain dicts among them (fetched data, the lenient decode)
        kinds = list(map(_resource_type, resources))
    for rtype, run in groupby(zip(kinds, resources, strict=True), key=itemgetter(0)):
        if type(rtype) is str:
            group = received.get(rtype)
            if group is None:
                group = received[rtype] = []
            group.extend(map(_second, run))


_code_attribute = attrgetter("code")


def _owners_of_concept(concept: object, owners_of: Callable[[object, object], Owners]) -> Owners:
    """The value sets a CodeableConcept's codings belong to, each once with the first
    coding in it; nothing for a concept or coding that is not a JSON object."""
    if type(concept) is not dict:
        return ()
    codings = concept.get("coding")
    if type(codings) is not list:
        return ()
    owners: dict[ValueSet, Concept] = {}
    for coding in codings:
        if type(coding) is dict:
            for value_set, matched in owners_of(coding.get("system"), coding.get("code")):
                owners.setdefault(value_set, matched)
    return tuple(owners.items())


class Record:
    """One patient's resources, grouped by type; coded ones filed under the rules' value sets.

    Nothing is checked or indexed up front: a resource is screened (``well_formed``, about
    this patient) when a rule first reaches it, and a resource type is indexed when a rule
    first asks for it. A chart without a leg-cramp problem only has its Conditions read.
    """

    def __init__(
        self,
        patient_id: str,
        resources: Iterable[Resource],
        now: datetime,
        codes: CodeIndex,
        strict: bool = False,
        local: tzinfo = UTC,
    ) -> None:
        self.patient_id = patient_id
        # How a resource about this patient refers to it, relative or absolute (``.../Patient/id``).
        self._reference = f"Patient/{patient_id}"
        self._absolute_tail = "/" + self._reference
        self.now = now
        self.local = local
        self.read = Reader(local, now)  # every date of the record is read through it
        self.codes = codes
        self.strict = strict  # every resource a rule reaches must pass R4B validation
        self.patient: Resource | None = None
        self.received: dict[str, list[Resource]] = {}  # as sent, unscreened
        self.left_out = 0  # malformed, or about another patient (among those a rule reached)
        self._screened: dict[int, bool] = {}
        self._by_type: dict[str, list[Resource]] = {}
        self._indexes: dict[str, dict[ValueSet, Matched]] = {}
        self._found: dict[tuple[str, ValueSet], Matched] = {}
        self._medications: dict[str, Resource] | None = None
        self._present: frozenset[Presence] | None = None
        self._valid: dict[int, bool] = {}
        # The one memo of the call: what the routes ask alike (results in a window, the
        # deciding result of a concept, the active medicines). Forgotten whenever a resource
        # proves invalid, as answers may rest on it; nothing in it outlives the call.
        self.memo: dict[tuple[Any, ...], Any] = {}
        _group_by_type(resources, self.received)
        self.labs = LabResults(self)
        for resource in self.received.get("Patient", ()):
            if self.screen(resource):
                self.patient = resource
                break
        # The birth date as read (onset ages are counted from it): read once, asked often.
        self.birth: Read = self.read.date((self.patient or {}).get("birthDate"))

    def screen(self, resource: Resource) -> bool:
        """Well formed and about this patient; decided once per resource."""
        key = id(resource)
        verdict = self._screened.get(key)
        if verdict is None:
            verdict = (
                well_formed(resource)
                and self._about_patient(resource)
                and (not self.strict or self.is_valid(resource))
            )
            self._screened[key] = verdict
            if not verdict:
                self.left_out += 1
        return verdict

    def _about_patient(self, resource: Resource) -> bool:
        """False for a resource whose subject is another patient (or not a patient)."""
        if type(resource) is dict:
            rtype, subject = resource.get("resourceType"), resource.get("subject")
            subject = subject or resource.get("patient")
        else:  # a decoded FhirNode: every type has these fields (JSON null reads as None)
            rtype, subject = resource.resourceType, resource.subject or resource.patient  # type: ignore[attr-defined]
        if rtype == "Patient":
            return resource.get("id") in (None, self.patient_id)
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if not isinstance(ref, str):
            return True  # no reference to check: prefetch is per patient by definition
        return ref == self._reference or ref.endswith(self._absolute_tail)

    def resources(self, rtype: str) -> list[Resource]:
        """Every screened resource of a type (for rules that read them all: medications)."""
        found = self._by_type.get(rtype)
        if found is None:
            found = self._by_type[rtype] = [
                r for r in self.received.get(rtype, ()) if self.screen(r)
            ]
        return found

    def find(self, rtype: str, value_set: ValueSet) -> Matched:
        """Screened resources of ``rtype`` with a coding in ``value_set``, each with the
        concept it matched. Memoised: several routes ask for the same value sets."""
        key = (rtype, value_set)
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = [
                pair for pair in self._candidates(rtype, value_set) if self.screen(pair[0])
            ]
        return found

    def present(self) -> frozenset[Presence]:
        """Every (resource type, value set) with candidates, and (type, None) for each type
        received: what ``rules.Need`` is checked against. Computed once, indexing the types."""
        if self._present is None:
            found: set[Presence] = {(rtype, None) for rtype in self.received}
            for rtype in INDEXED_TYPES:
                index = self._indexes.get(rtype)
                if index is None:
                    index = self._indexes[rtype] = self._index(rtype)
                found.update((rtype, value_set) for value_set in index)
            self._present = frozenset(found)
        return self._present

    def _candidates(self, rtype: str, value_set: ValueSet) -> Matched:
        """Like ``find``, before screening (lab results are screened one by one, lazily)."""
        index = self._indexes.get(rtype)
        if index is None:
            index = self._indexes[rtype] = self._index(rtype)
        if value_set not in self.codes.registered:
            raise KeyError(f"value set {value_set.name!r} is not in the rules' code index")
        return index.get(value_set, [])

    def _index(self, rtype: str) -> dict[ValueSet, Matched]:
        """File each resource of a type under the value sets its codes belong to.

        One pass over ``code.coding``: a resource is listed once per value set, with its
        first coding in it; codes outside every value set cost one memoised lookup.
        """
        index: dict[ValueSet, Matched] = {}
        owners_of = self.codes.owners
        memo = self.codes.memo  # read directly: one lookup per resource, no call
        group = self.received.get(rtype, [])
        if rtype == "Observation":  # a panel's components are results of their own
            group = group + [
                view
                for r in group
                if (r.get("component") if type(r) is dict else r.component)  # type: ignore[attr-defined]
                for view in component_views(r)
            ]
        try:
            concepts = list(map(_code_attribute, group))  # decoded FhirNodes: read in C
        except AttributeError:  # plain dicts among them
            concepts = [r.get("code") if type(r) is dict else r.code for r in group]  # type: ignore[attr-defined]
        for resource, concept in zip(group, concepts, strict=True):
            # The usual shape (one coding, of a code seen before) in a few steps; anything
            # else (several codings, an odd type, a code not looked up yet) the long way.
            try:
                codings = concept["coding"]
                coding = codings[0] if type(codings) is list and len(codings) == 1 else None
                owners = memo[(coding["system"], coding["code"])] if coding is not None else None
            except (KeyError, TypeError):
                owners = None
            if owners is None:
                owners = _owners_of_concept(concept, owners_of)
            for value_set, matched in owners:
                found = index.get(value_set)
                if found is None:
                    index[value_set] = [(resource, matched)]
                else:
                    found.append((resource, matched))
        return index

    def medication_of(self, resource: Resource) -> Resource | None:
        """The Medication a medicationReference points at (contained or in the record)."""
        ref = resource.get("medicationReference")
        ref = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(ref, str):
            return None
        if ref.startswith("#"):
            for contained in resource.get("contained") or []:
                if isinstance(contained, dict) and contained.get("id") == ref[1:]:
                    return contained
            return None
        if self._medications is None:
            self._medications = {
                "Medication/" + m["id"]: m
                for m in self.resources("Medication")
                if isinstance(m.get("id"), str)
            }
        return self._medications.get(ref)

    def release(self) -> None:
        """Drop the lab results, which refer back to the record: once a call is answered,
        its record is then freed by reference counting, not left to the cycle collector
        (a collection walks every object of the call still alive). Not read afterwards."""
        self.__dict__.pop("labs", None)

    def strict_copy(self) -> Record:
        """The same resources, each one R4B-validated before a rule reads it: for a route
        that failed on malformed data, so the malformed resource costs itself, not the route."""
        resources = [r for group in self.received.values() for r in group]
        return Record(
            self.patient_id, resources, self.now, self.codes, strict=True, local=self.local
        )

    def counts(self) -> dict[str, int]:
        """Resources received, by type (for the access log)."""
        return {rtype: len(items) for rtype, items in self.received.items()}

    def known_invalid(self, resource: Resource) -> bool:
        """True once validation has failed for this resource (see ``is_valid``)."""
        return self._valid.get(id(resource)) is False

    def is_valid(self, resource: Resource) -> bool:
        """Validate what the rules read of a resource against the FHIR R4B model.

        Only the elements the rules read, dates aside (``VALIDATED_OF``), are validated: a
        lab value is not dropped because of a malformed element no rule looks at, nor for a
        date in a form ``reading`` reads (or says it cannot), and validation costs less.
        """
        key = id(resource)
        verdict = self._valid.get(key)
        if verdict is None:
            rtype = resource.get("resourceType")
            verdict = self._valid[key] = rtype not in VALIDATED_TYPES or validates(
                rtype,
                {k: v for k, v in resource.items() if v is not None and k in VALIDATED_OF[rtype]},
            )
            if not verdict:
                self.memo.clear()
                log.warning("ignored an invalid %s resource", rtype)
        return verdict

    # Patient demographics used by the rules (CKD-EPI needs age and sex).
    @property
    def sex(self) -> str | None:
        gender = (self.patient or {}).get("gender")
        return gender if gender in {"male", "female"} else None

    @property
    def deceased(self) -> bool:
        """Recorded as deceased on or before today: no referral advice for such a chart."""
        return died_by(self.read, self.patient or {}, self.now)

    def age_on(self, when: datetime) -> float | None:
        birth = self.birth
        if not isinstance(birth, datetime) or birth > when:
            return None
        return (when - birth).days / 365.25
