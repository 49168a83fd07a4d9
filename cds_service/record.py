"""The patient record: every resource from prefetch or the FHIR server, read on demand.

Resources stay as decoded: plain dicts, or ``fhir_json.FhirNode`` structs that read the same
way. A resource type is indexed when a rule first asks for it, and only under the value sets
the rules use (``terminology.CodeIndex``), so the codes no rule reads cost one lookup. Only
the resources a rule actually uses as evidence are validated with the ``fhir.resources.R4B``
models (``Record.is_valid``), which keeps the hot path near the cost of JSON parsing.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

import orjson
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.fhir_json import FhirNode
from cds_service.quality import Reading, assess
from cds_service.terminology import CodeIndex, Concept, ValueSet, codings_of

log = logging.getLogger(__name__)

_MODELS = {
    m.__name__: m
    for m in (
        Condition,
        MedicationRequest,
        MedicationStatement,
        Observation,
        Patient,
        Procedure,
        ServiceRequest,
    )
}

# The elements the rules read, per resource type (choice elements: CHOICE_VARIANTS); with the
# elements each R4B model requires, this is what ``Record.is_valid`` validates. Both
# decoders (plain dicts, fhir_json.FhirNode) give it the same input: known names, no nulls.
ELEMENTS_READ = {
    "Condition": {
        "resourceType",
        "id",
        "clinicalStatus",
        "verificationStatus",
        "code",
        "subject",
        "recordedDate",
    },
    "Observation": {
        "resourceType",
        "id",
        "status",
        "code",
        "subject",
        "issued",
        "valueQuantity",
        "valueString",
        "interpretation",
    },
    "Procedure": {"resourceType", "id", "status", "code", "subject"},
    "MedicationRequest": {
        "resourceType",
        "id",
        "status",
        "intent",
        "subject",
        "authoredOn",
        "contained",
    },
    "MedicationStatement": {"resourceType", "id", "status", "subject", "contained"},
    "ServiceRequest": {"resourceType", "id", "status", "intent", "code", "subject", "authoredOn"},
    "Patient": {"resourceType", "id", "gender", "birthDate"},
}
VERDICT_CONTENT_LIMIT = 8192  # bytes of validated elements remembered per verdict
INDEXED_TYPES = ("Condition", "Observation", "Procedure", "ServiceRequest")  # coded, by value set
# Every FHIR R4 variant of the choice elements the rules read (onset[x], abatement[x],
# effective[x], performed[x], medication[x]); validated with ELEMENTS_READ wherever present.
CHOICE_VARIANTS = frozenset(
    {
        "onsetDateTime",
        "onsetAge",
        "onsetPeriod",
        "onsetRange",
        "onsetString",
        "abatementDateTime",
        "abatementAge",
        "abatementPeriod",
        "abatementRange",
        "abatementString",
        "abatementBoolean",
        "deceasedBoolean",
        "deceasedDateTime",
        "effectiveDateTime",
        "effectivePeriod",
        "effectiveTiming",
        "effectiveInstant",
        "performedDateTime",
        "performedPeriod",
        "performedString",
        "performedAge",
        "performedRange",
        "medicationCodeableConcept",
        "medicationReference",
    }
)
ABATEMENT_VARIANTS = tuple(sorted(v for v in CHOICE_VARIANTS if v.startswith("abatement")))

# The JSON type each element the engine reads must have; a resource where one is of the
# wrong type is left out whole (malformed input must never reach the rules as a crash).
_SHAPES = {
    "status": str,
    "intent": str,
    "id": str,
    "gender": str,
    "birthDate": str,
    "code": dict,
    "clinicalStatus": dict,
    "verificationStatus": dict,
    "subject": dict,
    "patient": dict,
    "valueQuantity": dict,
    "medicationCodeableConcept": dict,
    "medicationReference": dict,
    "onsetPeriod": dict,
    "effectivePeriod": dict,
    "performedPeriod": dict,
    "contained": list,
    "ingredient": list,
    "interpretation": list,
    "valueString": str,
    "onsetDateTime": str,
    "recordedDate": str,
    "effectiveDateTime": str,
    "effectiveInstant": str,
    "issued": str,
    "performedDateTime": str,
    "authoredOn": str,
    "abatementDateTime": str,
    "deceasedDateTime": str,
    "deceasedBoolean": bool,
}
_QUANTITY_SHAPES = {"code": str, "unit": str, "comparator": str, "system": str}


def well_formed(resource: dict) -> bool:
    """Every element the rules read has the JSON type FHIR gives it."""
    if type(resource) is not FhirNode:  # a FhirNode was decoded with these types
        for name, value in resource.items():  # a resource has fewer members than _SHAPES
            kind = _SHAPES.get(name)
            if kind is not None and value is not None and not isinstance(value, kind):
                return False
    quantity = resource.get("valueQuantity")
    if quantity is not None:
        for name, value in quantity.items():
            kind = _QUANTITY_SHAPES.get(name)
            if kind is not None and value is not None and not isinstance(value, kind):
                return False
    for contained in resource.get("contained") or ():
        if not isinstance(contained, dict) or not well_formed(contained):
            return False
    return True


CONDITION_ACTIVE = {"active", "recurrence", "relapse"}
CONDITION_EXCLUDED_VERIFICATION = {"refuted", "entered-in-error"}
OBSERVATION_FINAL = {"final", "amended", "corrected"}
PROCEDURE_DONE = {"completed", "in-progress"}
MEDICATION_ACTIVE = {"active", "on-hold"}
REFERRAL_OPEN = {"active", "on-hold"}  # a draft is only proposed, not yet a referral


def parse_datetime(value: object) -> datetime | None:
    """A FHIR date/dateTime/instant as an aware datetime (dates and naive times as UTC)."""
    if not isinstance(value, str) or not 4 <= len(value) <= 64:
        return None
    return _parse_datetime(value)


@lru_cache(maxsize=16384)  # lab panels share their timestamps, charts repeat across calls
def _parse_datetime(value: str) -> datetime | None:
    try:
        if len(value) == 4:
            return datetime(int(value), 1, 1, tzinfo=UTC)
        if len(value) == 7:
            return datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=UTC)
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _validates(rtype: str, elements: dict) -> bool:
    """Whether the R4B model accepts these elements of a resource.

    The verdict is remembered by content (the exact JSON of the elements validated): the
    same chart is opened many times a day, and pydantic validation costs about 0.1 ms per
    resource, as much as parsing 40 resources of JSON.
    """
    try:
        content = orjson.dumps(elements)
    except (orjson.JSONEncodeError, TypeError):  # e.g. an integer beyond 64 bits: no memo
        return _model_accepts(rtype, elements)
    if len(content) > VERDICT_CONTENT_LIMIT:  # unusually large: validated, not remembered
        return _model_accepts(rtype, elements)
    return _validates_content(rtype, content)


@lru_cache(maxsize=4096)
def _validates_content(rtype: str, content: bytes) -> bool:
    return _model_accepts(rtype, orjson.loads(content))


def _model_accepts(rtype: str, elements: dict) -> bool:
    try:
        _MODELS[rtype].model_validate(elements)
    except Exception as exc:  # pydantic.ValidationError and friends
        log.debug("%s failed R4B validation (%s)", rtype, type(exc).__name__)
        return False
    return True


@lru_cache(maxsize=16384)
def _instant(value: str) -> tuple[float, datetime] | None:
    """(POSIX timestamp, datetime) of a FHIR dateTime string, remembered like the parse."""
    when = _parse_datetime(value)
    return (when.timestamp(), when) if when is not None else None


def _status_code(concept: object) -> str | None:
    for _system, code, _display in codings_of(concept):
        return code
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for coding in codings if isinstance(codings, list) else ():
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return coding["code"]
    return None


def condition_counts(resource: dict) -> bool:
    """Active (or no status), not abated, and neither refuted nor entered in error.

    An abatement date contradicts an "active" status (FHIR invariant con-4): such a
    record is treated as resolved rather than firing a rule on inconsistent data.
    """
    clinical = _status_code(resource.get("clinicalStatus"))
    verification = _status_code(resource.get("verificationStatus"))
    if verification in CONDITION_EXCLUDED_VERIFICATION:
        return False
    if any(resource.get(name) not in (False, None) for name in ABATEMENT_VARIANTS):
        return False
    return clinical is None or clinical in CONDITION_ACTIVE


def condition_dates(resource: dict) -> tuple[datetime | None, datetime | None]:
    """(onset, recorded date): problem lists often carry only one, or a late recording."""
    onset = resource.get("onsetDateTime") or (resource.get("onsetPeriod") or {}).get("start")
    return parse_datetime(onset), parse_datetime(resource.get("recordedDate"))


def condition_date(resource: dict) -> datetime | None:
    """When the condition started, or failing that, when it was recorded."""
    onset, recorded = condition_dates(resource)
    return onset or recorded


def observation_date(resource: dict) -> datetime | None:
    period = (
        resource.get("effectivePeriod") if isinstance(resource.get("effectivePeriod"), dict) else {}
    )
    return (
        parse_datetime(resource.get("effectiveDateTime"))
        or parse_datetime(resource.get("effectiveInstant"))
        or parse_datetime(period.get("end"))
        or parse_datetime(period.get("start"))
        or parse_datetime(resource.get("issued"))
    )


def procedure_date(resource: dict) -> datetime | None:
    period = (
        resource.get("performedPeriod") if isinstance(resource.get("performedPeriod"), dict) else {}
    )
    return (
        parse_datetime(resource.get("performedDateTime"))
        or parse_datetime(period.get("end"))
        or parse_datetime(period.get("start"))
    )


def medication_date(resource: dict) -> datetime | None:
    period = (
        resource.get("effectivePeriod") if isinstance(resource.get("effectivePeriod"), dict) else {}
    )
    return (
        parse_datetime(resource.get("authoredOn"))
        or parse_datetime(resource.get("effectiveDateTime"))
        or parse_datetime(period.get("start"))
    )


def reference_to(resource: dict) -> str | None:
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"{resource['resourceType']}/{rid}"
    return None


class Record:
    """One patient's resources, grouped by type; coded ones filed under the rules' value sets.

    Nothing is checked or indexed up front: a resource is screened (``well_formed``, about
    this patient) when a rule first reaches it, and a resource type is indexed when a rule
    first asks for it. A chart without a leg-cramp problem only has its Conditions read.
    """

    def __init__(
        self, patient_id: str, resources, now: datetime, codes: CodeIndex, strict: bool = False
    ):
        self.patient_id = patient_id
        self.now = now
        self.codes = codes
        self.strict = strict  # every resource a rule reaches must pass R4B validation
        self.patient: dict | None = None
        self.received: dict[str, list[dict]] = {}  # as sent, unscreened
        self.left_out = 0  # malformed, or about another patient (among those a rule reached)
        self._screened: dict[int, bool] = {}
        self._by_type: dict[str, list[dict]] = {}
        self._indexes: dict[str, dict[ValueSet, list[tuple[dict, Concept]]]] = {}
        self._found: dict[tuple[str, ValueSet], list[tuple[dict, Concept]]] = {}
        self._dated: dict[str, list[tuple]] = {}
        self._values: dict[str, dict[int, Reading]] = {}
        self._medications: dict[str, dict] | None = None
        self._present: frozenset | None = None
        self._valid: dict[int, bool] = {}
        self.invalid_count = 0  # resources found invalid so far: part of every memo key
        self.memo: dict[tuple, object] = {}  # answers the rules share across routes
        received = self.received
        for resource in resources:
            kind = type(resource)
            rtype = (
                resource.resourceType
                if kind is FhirNode  # attribute: the hot path
                else resource.get("resourceType")
                if kind is dict
                else None
            )
            if type(rtype) is str:
                group = received.get(rtype)
                if group is None:
                    group = received[rtype] = []
                group.append(resource)
        for resource in self.received.get("Patient", ()):
            if self.screen(resource):
                self.patient = resource
                break

    def screen(self, resource: dict) -> bool:
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

    def _about_patient(self, resource: dict) -> bool:
        """False for a resource whose subject is another patient (or not a patient)."""
        if resource.get("resourceType") == "Patient":
            return resource.get("id") in (None, self.patient_id)
        subject = resource.get("subject") or resource.get("patient")
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if not isinstance(ref, str):
            return True  # no reference to check: prefetch is per patient by definition
        wanted = f"Patient/{self.patient_id}"
        return ref == wanted or ref.endswith("/" + wanted)

    def resources(self, rtype: str) -> list[dict]:
        """Every screened resource of a type (for rules that read them all: medications)."""
        found = self._by_type.get(rtype)
        if found is None:
            found = self._by_type[rtype] = [
                r for r in self.received.get(rtype, ()) if self.screen(r)
            ]
        return found

    def find(self, rtype: str, value_set: ValueSet) -> list[tuple[dict, Concept]]:
        """Screened resources of ``rtype`` with a coding in ``value_set``, each with the
        concept it matched. Memoised: several routes ask for the same value sets."""
        key = (rtype, value_set)
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = [
                pair for pair in self._candidates(rtype, value_set) if self.screen(pair[0])
            ]
        return found

    def present(self) -> frozenset:
        """Every (resource type, value set) with candidates, and (type, None) for each type
        received: what ``rules.Need`` is checked against. Computed once, indexing the types."""
        if self._present is None:
            found = {(rtype, None) for rtype in self.received}
            for rtype in INDEXED_TYPES:
                index = self._indexes.get(rtype)
                if index is None:
                    index = self._indexes[rtype] = self._index(rtype)
                found.update((rtype, value_set) for value_set in index)
            self._present = frozenset(found)
        return self._present

    def _candidates(self, rtype: str, value_set: ValueSet) -> list[tuple[dict, Concept]]:
        """Like ``find``, before screening (lab results are screened one by one, lazily)."""
        index = self._indexes.get(rtype)
        if index is None:
            index = self._indexes[rtype] = self._index(rtype)
        if value_set not in self.codes.registered:
            raise KeyError(f"value set {value_set.name!r} is not in the rules' code index")
        return index.get(value_set, ())

    def _index(self, rtype: str) -> dict[ValueSet, list[tuple[dict, Concept]]]:
        """File each resource of a type under the value sets its codes belong to.

        One pass over ``code.coding``: a resource is listed once per value set, with its
        first coding in it; codes outside every value set cost one dict lookup.
        """
        index: dict[ValueSet, list[tuple[dict, Concept]]] = {}
        owners_of = self.codes.owners
        for resource in self.received.get(rtype, ()):
            concept = resource.code if type(resource) is FhirNode else resource.get("code")
            codings = concept.get("coding") if type(concept) is dict else None
            if type(codings) is not list:
                continue
            if len(codings) == 1:  # the usual case: no value set can be reached twice
                coding = codings[0]
                if type(coding) is dict:
                    for value_set, matched in owners_of(coding.get("system"), coding.get("code")):
                        found = index.get(value_set)
                        if found is None:
                            found = index[value_set] = []
                        found.append((resource, matched))
                continue
            filed = set()
            for coding in codings:
                if type(coding) is not dict:
                    continue
                for value_set, matched in owners_of(coding.get("system"), coding.get("code")):
                    if value_set not in filed:
                        filed.add(value_set)
                        index.setdefault(value_set, []).append((resource, matched))
        return index

    def medication_of(self, resource: dict) -> dict | None:
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

    def strict_copy(self) -> Record:
        """The same resources, each one R4B-validated before a rule reads it: for a route
        that failed on malformed data, so the malformed resource costs itself, not the route."""
        resources = [r for group in self.received.values() for r in group]
        return Record(self.patient_id, resources, self.now, self.codes, strict=True)

    def counts(self) -> dict[str, int]:
        """Resources received, by type (for the access log)."""
        return {rtype: len(items) for rtype, items in self.received.items()}

    def newest_result(self, concept, statuses, since: datetime | None = None) -> tuple | None:
        """The newest result of a lab concept with one of ``statuses`` (from ``since`` on):
        (when, canonical value, resource, code), or None.

        The value is ``None`` when it cannot be converted to the concept's unit: an
        unreadable newest result is not silently replaced by an older one. Results are
        screened and converted only when reached (most rules stop at the newest one); a
        plain loop, as abandoning a generator part-way costs more than the rest.
        """
        oldest = since.timestamp() if since is not None else None
        for stamp, when, resource, code in self._dated_of(concept):
            if oldest is not None and stamp < oldest:
                return None  # newest first: the rest are older still
            if (
                self.screen(resource)
                and resource.get("status") in statuses
                and not self.known_invalid(resource)
            ):
                return when, self._value(concept, resource), resource, code
        return None

    def results_in(self, concept, statuses, since: datetime | None) -> list[tuple]:
        """Every such result from ``since`` on, newest first (see ``newest_result``)."""
        oldest = since.timestamp() if since is not None else None
        found = []
        for stamp, when, resource, code in self._dated_of(concept):
            if oldest is not None and stamp < oldest:
                break
            if (
                self.screen(resource)
                and resource.get("status") in statuses
                and not self.known_invalid(resource)
            ):
                found.append((when, self._value(concept, resource), resource, code))
        return found

    def newest_results(
        self, concept, statuses, since: datetime | None = None, same_day: bool = False
    ) -> list[tuple]:
        """Every result at the newest instant (``same_day``: on the newest day) from
        ``since`` on, usable or not: several results of one instant are decided by rule
        (the worse value), never by which came first in the bundle."""
        oldest = since.timestamp() if since is not None else None
        found: list[tuple] = []
        first = None
        for stamp, when, resource, code in self._dated_of(concept):
            if oldest is not None and stamp < oldest:
                break
            if first is not None and (
                when.date() != first[1].date() if same_day else stamp != first[0]
            ):
                break
            if (
                self.screen(resource)
                and resource.get("status") in statuses
                and not self.known_invalid(resource)
            ):
                first = first or (stamp, when)
                found.append((when, self._value(concept, resource), resource, code))
        return found

    def _dated_of(self, concept) -> list[tuple]:
        dated = self._dated.get(concept.name)
        if dated is None:
            dated = self._dated[concept.name] = self._dated_results(concept)
        return dated

    def _value(self, concept, resource) -> float | None:
        """The result's value in the concept's canonical unit when usable, else None."""
        return self.reading(concept, resource).value

    def reading(self, concept, resource) -> Reading:
        """The result as the rules may use it (``quality.assess``), decided once per record."""
        readings = self._values.setdefault(concept.name, {})
        key = id(resource)
        found = readings.get(key)
        if found is None:
            found = readings[key] = assess(concept, resource)
            if not found.usable:
                log.info("a %s result is %s: %s", concept.name, found.status, found.reason)
        return found

    def _dated_results(self, concept) -> list[tuple]:
        """(POSIX timestamp, when, resource, code), newest first. Sorted and compared on
        timestamps: comparing datetimes that carry UTC offsets is several times slower."""
        latest_allowed = (self.now + timedelta(days=1)).timestamp()
        dated = []
        for resource, code in self._candidates("Observation", concept.value_set):
            effective = (
                resource.effectiveDateTime
                if type(resource) is FhirNode  # usual case
                else resource.get("effectiveDateTime")
            )
            instant = (
                _instant(effective)
                if type(effective) is str and 4 <= len(effective) <= 64
                else None
            )
            if instant is None:
                when = observation_date(resource)
                if when is None:
                    continue
                instant = (when.timestamp(), when)
            if instant[0] <= latest_allowed:
                dated.append((*instant, resource, code))
        # Newest first; results of one instant in a fixed order whatever the bundle's: the
        # concept's codes as listed (serum or plasma before blood), then the resource id.
        rank = {key: i for i, key in enumerate(concept.value_set.exact)}
        dated.sort(
            key=lambda r: (
                -r[0],
                rank.get((r[3].system, r[3].code), len(rank)),
                str(r[2].get("id")),
            )
        )
        return dated

    def known_invalid(self, resource: dict) -> bool:
        """True once validation has failed for this resource (see ``is_valid``)."""
        return self._valid.get(id(resource)) is False

    def is_valid(self, resource: dict) -> bool:
        """Validate what the rules read of a resource against the FHIR R4B model.

        Only the elements in ``ELEMENTS_READ`` are validated: a lab value is not dropped
        because of a malformed element no rule looks at, and validation costs half as much.
        """
        key = id(resource)
        verdict = self._valid.get(key)
        if verdict is None:
            rtype = resource.get("resourceType")
            verdict = self._valid[key] = rtype not in _MODELS or _validates(
                rtype,
                {
                    k: v
                    for k, v in resource.items()
                    if v is not None and (k in ELEMENTS_READ[rtype] or k in CHOICE_VARIANTS)
                },
            )
            if not verdict:
                self.invalid_count += 1
                log.warning("ignored an invalid %s resource", rtype)
        return verdict

    # Patient demographics used by the rules (CKD-EPI needs age and sex).
    @property
    def sex(self) -> str | None:
        gender = (self.patient or {}).get("gender")
        return gender if gender in {"male", "female"} else None

    @property
    def deceased(self) -> bool:
        """Recorded as deceased on or before today: no referral advice for such a chart.

        A death date that cannot be read still says the patient died; a death date after
        the clinical today (a replayed chart) does not yet apply.
        """
        patient = self.patient or {}
        if patient.get("deceasedBoolean") is True:
            return True
        died = patient.get("deceasedDateTime")
        if died is None:
            return False
        when = parse_datetime(died)
        return when is None or when <= self.now + timedelta(days=1)

    def age_on(self, when: datetime) -> float | None:
        birth = parse_datetime((self.patient or {}).get("birthDate"))
        if birth is None or birth > when:
            return None
        return (when - birth).days / 365.25
