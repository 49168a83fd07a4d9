"""The patient record: every resource from prefetch or the FHIR server, indexed once.

Resources stay plain dicts (cheap); indexes map (resourceType, system, code) to resources so
rules find candidates without scanning. Only the resources a rule actually uses as evidence
are validated with the ``fhir.resources.R4B`` models (``Record.is_valid``), which keeps the
hot path near the cost of JSON parsing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, datetime, time, timedelta, timezone

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.terminology import codings_of

log = logging.getLogger(__name__)

INDEXED_TYPES = ("Condition", "Observation", "Procedure", "MedicationRequest",
                 "MedicationStatement", "ServiceRequest")
_MODELS = {m.__name__: m for m in (Condition, MedicationRequest, MedicationStatement,
                                   Observation, Patient, Procedure, ServiceRequest)}

# The elements the rules read, per resource type ([x] choice elements by prefix); with the
# elements each R4B model requires, this is what ``Record.is_valid`` validates.
ELEMENTS_READ = {
    "Condition": {"resourceType", "id", "clinicalStatus", "verificationStatus", "code",
                  "subject", "recordedDate"},
    "Observation": {"resourceType", "id", "status", "code", "subject", "issued",
                    "valueQuantity"},
    "Procedure": {"resourceType", "id", "status", "code", "subject"},
    "MedicationRequest": {"resourceType", "id", "status", "intent", "subject", "authoredOn",
                          "contained"},
    "MedicationStatement": {"resourceType", "id", "status", "subject", "contained"},
    "ServiceRequest": {"resourceType", "id", "status", "intent", "code", "subject",
                       "authoredOn"},
    "Patient": {"resourceType", "id", "gender", "birthDate"},
}
CHOICE_ELEMENTS = ("onset", "abatement", "effective", "performed", "medication")

# The JSON type each element the engine reads must have; a resource where one is of the
# wrong type is left out whole (malformed input must never reach the rules as a crash).
_SHAPES = {
    "status": str, "intent": str, "id": str, "gender": str, "birthDate": str,
    "code": dict, "clinicalStatus": dict, "verificationStatus": dict, "subject": dict,
    "patient": dict, "valueQuantity": dict, "medicationCodeableConcept": dict,
    "medicationReference": dict, "onsetPeriod": dict, "effectivePeriod": dict,
    "performedPeriod": dict, "contained": list, "ingredient": list,
    "onsetDateTime": str, "recordedDate": str, "effectiveDateTime": str,
    "effectiveInstant": str, "issued": str, "performedDateTime": str, "authoredOn": str,
    "abatementDateTime": str,
}
_QUANTITY_SHAPES = {"code": str, "unit": str, "comparator": str, "system": str}


def well_formed(resource: dict) -> bool:
    """Every element the rules read has the JSON type FHIR gives it."""
    for name, kind in _SHAPES.items():
        value = resource.get(name)
        if value is not None and not isinstance(value, kind):
            return False
    quantity = resource.get("valueQuantity")
    if quantity is not None:
        for name, kind in _QUANTITY_SHAPES.items():
            value = quantity.get(name)
            if value is not None and not isinstance(value, kind):
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
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) == 4:
            return datetime(int(value), 1, 1, tzinfo=timezone.utc)
        if len(value) == 7:
            return datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=timezone.utc)
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), timezone.utc)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _status_code(concept: object) -> str | None:
    for _system, code, _display in codings_of(concept):
        return code
    if isinstance(concept, dict):
        for coding in concept.get("coding") or []:
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
    if any(k.startswith("abatement") and resource[k] not in (False, None) for k in resource):
        return False
    return clinical is None or clinical in CONDITION_ACTIVE


def condition_date(resource: dict) -> datetime | None:
    """When the condition started, or failing that, when it was recorded."""
    onset = resource.get("onsetDateTime") or (resource.get("onsetPeriod") or {}).get("start")
    return parse_datetime(onset) or parse_datetime(resource.get("recordedDate"))


def observation_date(resource: dict) -> datetime | None:
    period = resource.get("effectivePeriod") if isinstance(resource.get("effectivePeriod"), dict) else {}
    return (parse_datetime(resource.get("effectiveDateTime"))
            or parse_datetime(resource.get("effectiveInstant"))
            or parse_datetime(period.get("end")) or parse_datetime(period.get("start"))
            or parse_datetime(resource.get("issued")))


def procedure_date(resource: dict) -> datetime | None:
    period = resource.get("performedPeriod") if isinstance(resource.get("performedPeriod"), dict) else {}
    return (parse_datetime(resource.get("performedDateTime"))
            or parse_datetime(period.get("end")) or parse_datetime(period.get("start")))


def medication_date(resource: dict) -> datetime | None:
    period = resource.get("effectivePeriod") if isinstance(resource.get("effectivePeriod"), dict) else {}
    return (parse_datetime(resource.get("authoredOn"))
            or parse_datetime(resource.get("effectiveDateTime"))
            or parse_datetime(period.get("start")))


def reference_to(resource: dict) -> str | None:
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"{resource['resourceType']}/{rid}"
    return None


class Record:
    """One patient's resources, indexed by type and by (type, system, code)."""

    def __init__(self, patient_id: str, resources, now: datetime):
        self.patient_id = patient_id
        self.now = now
        self.patient: dict | None = None
        self.by_type: dict[str, list[dict]] = defaultdict(list)
        self.by_code: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
        self.codes_by_system: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._indexed: set[str] = set()
        self._medications: dict[str, dict] = {}
        self._valid: dict[int, bool] = {}
        self._results: dict[str, list[tuple]] = {}
        self._found: dict[tuple[str, int], list] = {}
        self.type_codes: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self.left_out = 0  # malformed, or about another patient
        for resource in resources:
            rtype = resource.get("resourceType") if isinstance(resource, dict) else None
            if not isinstance(rtype, str):
                continue
            if not well_formed(resource) or not self._about_patient(resource):
                self.left_out += 1
                continue
            if rtype == "Patient":
                self.patient = resource
            elif rtype == "Medication" and isinstance(resource.get("id"), str):
                self._medications["Medication/" + resource["id"]] = resource
            elif rtype in INDEXED_TYPES:
                self.by_type[rtype].append(resource)

        if self.left_out:
            log.warning("left out %d malformed resources or resources about another patient",
                        self.left_out)

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

    def _ensure_indexed(self, rtype: str) -> None:
        """Index one resource type by code on first use (no cramp problem: only Conditions)."""
        if rtype in self._indexed:
            return
        self._indexed.add(rtype)
        for resource in self.by_type.get(rtype, ()):
            if rtype in ("MedicationRequest", "MedicationStatement"):
                self._index_medication(resource)
            else:
                self._index(rtype, resource, resource.get("code"))

    def _index(self, rtype: str, resource: dict, concept: object) -> None:
        seen = set()
        for system, code, _display in codings_of(concept):
            key = (rtype, system, code)
            if key in seen:
                continue
            seen.add(key)
            self.by_code[key].append(resource)
            self.codes_by_system[(rtype, system)].add(code)
            self.type_codes[rtype].add((system, code))

    def _index_medication(self, resource: dict) -> None:
        """Index a medication order by its product code and, where given, its ingredients."""
        rtype = resource["resourceType"]
        concepts = [resource.get("medicationCodeableConcept")]
        medication = self.medication_of(resource)
        if medication:
            concepts.append(medication.get("code"))
            for ingredient in medication.get("ingredient") or []:
                if isinstance(ingredient, dict):
                    concepts.append(ingredient.get("itemCodeableConcept"))
        for concept in concepts:
            self._index(rtype, resource, concept)

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
        return self._medications.get(ref)

    def find(self, rtype: str, value_set) -> list[tuple[dict, object]]:
        """Resources of ``rtype`` with a coding in ``value_set``, each with the matched concept.

        Memoised per record: several routes ask for the same value sets.
        """
        key = (rtype, id(value_set))
        cached = self._found.get(key)
        if cached is not None:
            return cached
        self._ensure_indexed(rtype)
        hits: dict[int, tuple[dict, object]] = {}
        codes = self.type_codes.get(rtype, ())
        if len(codes) < len(value_set.exact):  # walk the smaller of record and value set
            pairs = [pair for pair in codes if pair in value_set.exact]
        else:
            pairs = value_set.keys()
        for (system, code) in pairs:
            for resource in self.by_code.get((rtype, system, code), ()):
                hits.setdefault(id(resource), (resource, value_set.exact[(system, code)]))
        for prefix in value_set.prefixes:
            for code in self.codes_by_system.get((rtype, prefix.system), ()):
                if code.startswith(prefix.code):
                    for resource in self.by_code[(rtype, prefix.system, code)]:
                        hits.setdefault(id(resource), (resource, prefix))
        self._found[key] = found = list(hits.values())
        return found

    def results_of(self, concept) -> list[tuple]:
        """A lab concept's dated results, newest first: (when, canonical value, resource, code).

        Computed once per record and concept. Results without a date or dated in the future
        are left out; a value that cannot be converted to the concept's unit is ``None``
        (kept, so that an unreadable newest result is not silently replaced by an older one).
        """
        cached = self._results.get(concept.name)
        if cached is not None:
            return cached
        results = []
        latest_allowed = self.now + timedelta(days=1)
        for resource, code in self.find("Observation", concept.value_set):
            when = observation_date(resource)
            if when is None or when > latest_allowed:
                continue
            value = concept.value_in(resource.get("valueQuantity"))
            if value is None:
                log.info("a %s result has no value in a convertible unit", concept.name)
            results.append((when, value, resource, code))
        results.sort(key=lambda r: r[0], reverse=True)
        self._results[concept.name] = results
        return results

    def known_invalid(self, resource: dict) -> bool:
        """True once validation has failed for this resource (see ``is_valid``)."""
        return self._valid.get(id(resource)) is False

    def is_valid(self, resource: dict) -> bool:
        """Validate what the rules read of a resource against the FHIR R4B model.

        Only the elements in ``ELEMENTS_READ`` are validated: a lab value is not dropped
        because of a malformed element no rule looks at, and validation costs half as much.
        """
        key = id(resource)
        if key not in self._valid:
            rtype = resource.get("resourceType")
            model = _MODELS.get(rtype)
            try:
                if model is not None:
                    read = ELEMENTS_READ[rtype]
                    model.model_validate({k: v for k, v in resource.items()
                                          if k in read or k.startswith(CHOICE_ELEMENTS)})
                self._valid[key] = True
            except Exception as exc:  # pydantic.ValidationError and friends
                log.warning("ignored an invalid %s resource (%s)", resource.get("resourceType"),
                            type(exc).__name__)
                self._valid[key] = False
        return self._valid[key]

    # Patient demographics used by the rules (CKD-EPI needs age and sex).
    @property
    def sex(self) -> str | None:
        gender = (self.patient or {}).get("gender")
        return gender if gender in {"male", "female"} else None

    def age_on(self, when: datetime) -> float | None:
        birth = parse_datetime((self.patient or {}).get("birthDate"))
        if birth is None or birth > when:
            return None
        return (when - birth).days / 365.25
