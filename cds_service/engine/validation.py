"""FHIR R4B validation of the elements the rules read, and the JSON shapes they rely on.

The R4B models (``fhir.resources``) are imported on the first validation, not at start-up:
most calls validate only the few resources a card rests on, and importing the models costs
more than a whole hook call (start-up to the first answer is measured in ``bench/``).
"""

from __future__ import annotations

import importlib
import logging
from functools import cache, lru_cache
from typing import Any

import orjson

from cds_service.engine.reading import DATED_CHOICES, TEMPORAL_ELEMENTS
from cds_service.engine.shapes import Resource

log = logging.getLogger(__name__)

# Resource type -> the module of its R4B model (fhir.resources.R4B.<module>.<type>).
_MODEL_MODULES = {
    "Condition": "condition",
    "MedicationRequest": "medicationrequest",
    "MedicationStatement": "medicationstatement",
    "Observation": "observation",
    "Patient": "patient",
    "Procedure": "procedure",
    "ServiceRequest": "servicerequest",
}
VALIDATED_TYPES = frozenset(_MODEL_MODULES)

# The elements the rules read, per resource type (choice elements: CHOICE_VARIANTS_OF); with the
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
# Every FHIR R4 variant of the choice elements the rules read (onset[x], abatement[x],
# effective[x], performed[x], medication[x]); each type's own (CHOICE_VARIANTS_OF) are
# validated with its ELEMENTS_READ.
CHOICE_VARIANTS = DATED_CHOICES | {
    "deceasedBoolean",
    "medicationCodeableConcept",
    "medicationReference",
}
# The choice elements of each resource type (FHIR R4): only these are validated with its
# ELEMENTS_READ, so a variant a type does not have (an onsetDateTime on an Observation) is
# ignored like any other element no rule reads, whichever decoder gave the resource.
_CHOICES_BY_PREFIX = {
    "Condition": ("onset", "abatement"),
    "Observation": ("effective",),
    "Procedure": ("performed",),
    "MedicationRequest": ("medication",),
    "MedicationStatement": ("medication", "effectiveDateTime", "effectivePeriod"),
    "Patient": ("deceased",),
}
CHOICE_VARIANTS_OF = {
    rtype: frozenset(v for v in CHOICE_VARIANTS if v.startswith(prefixes))
    for rtype, prefixes in _CHOICES_BY_PREFIX.items()
}
# What ``Record.is_valid`` hands the R4B model of each type: the elements read, without the
# dates (``reading`` owns them: an ``issued`` written as a date must not cost the result).
VALIDATED_OF = {
    rtype: frozenset(elements | CHOICE_VARIANTS_OF.get(rtype, frozenset())) - TEMPORAL_ELEMENTS
    for rtype, elements in ELEMENTS_READ.items()
}

# The JSON type each element the engine reads must have; a resource where one of its type's
# elements (ELEMENTS_OF) is of the wrong type is left out whole (malformed input must never
# reach the rules as a crash; the typed decoder sends such a request down the dict path).
_SHAPES = {
    "status": str,
    "intent": str,
    "id": str,
    "gender": str,
    "code": dict,
    "clinicalStatus": dict,
    "verificationStatus": dict,
    "subject": dict,
    "patient": dict,
    "valueQuantity": dict,
    "medicationCodeableConcept": dict,
    "medicationReference": dict,
    "contained": list,
    "ingredient": list,
    "interpretation": list,
    "component": list,
    "valueString": str,
    "deceasedBoolean": bool,
}
# Dates are not among them: ``reading`` reads every form of them, a malformed one as
# unreadable, so a date costs only itself, never the resource.
_QUANTITY_SHAPES = {"code": str, "unit": str, "comparator": str, "system": str}


# What the engine reads of each resource type a prefetch carries: exactly the fields of
# fhir_json's class for the type (tests/test_fhir_json.py), and the only elements whose
# JSON type ``well_formed`` checks, so both decoders keep or leave out the same resources
# (an element a type does not have, such as a status on a Condition, is read by no rule).
_READ_OF_EVERY_TYPE = frozenset({"resourceType", "id", "subject", "patient", "contained"})
ELEMENTS_OF = {
    rtype: _READ_OF_EVERY_TYPE | {"valueQuantity"} | frozenset(elements)
    for rtype, elements in {
        "Condition": {
            "code",
            "clinicalStatus",
            "verificationStatus",
            "recordedDate",
            *CHOICE_VARIANTS_OF["Condition"],
        },
        "Observation": {
            "status",
            "code",
            "issued",
            "valueString",
            "interpretation",
            "component",
            *CHOICE_VARIANTS_OF["Observation"],
        },
        "Procedure": {"status", "code", *CHOICE_VARIANTS_OF["Procedure"]},
        # effective[x] of a MedicationRequest and authoredOn of a statement are not theirs
        # in FHIR, but the medication date reads them where present.
        "MedicationRequest": {
            "status",
            "intent",
            "authoredOn",
            "effectiveDateTime",
            "effectivePeriod",
            *CHOICE_VARIANTS_OF["MedicationRequest"],
        },
        "MedicationStatement": {"status", "authoredOn", *CHOICE_VARIANTS_OF["MedicationStatement"]},
        "Medication": {"status", "code", "ingredient"},
        "ServiceRequest": {"status", "intent", "code", "authoredOn", "category"},
        "Patient": {"gender", "birthDate", *CHOICE_VARIANTS_OF["Patient"]},
        "OperationOutcome": set(),
        "Bundle": {"link", "entry"},
    }.items()
}
_SHAPES_OF = {
    rtype: {name: kind for name, kind in _SHAPES.items() if name in elements}
    for rtype, elements in ELEMENTS_OF.items()
}


def well_formed(resource: Resource) -> bool:
    """Every element the rules read of the resource's type has the JSON type FHIR gives it
    (any type the decoder has no class for: every element the rules read of any type)."""
    if type(resource) is dict:
        rtype = resource.get("resourceType")
        shapes = _SHAPES_OF.get(rtype, _SHAPES) if type(rtype) is str else _SHAPES
        for name, value in resource.items():  # a resource has fewer members than _SHAPES
            kind = shapes.get(name)
            if kind is not None and value is not None and not isinstance(value, kind):
                return False
        quantity, contained = resource.get("valueQuantity"), resource.get("contained")
    else:  # a decoded FhirNode already has these types, and every type has these fields
        quantity, contained = resource.valueQuantity, resource.contained  # type: ignore[attr-defined]
    if quantity is not None:
        for name, value in quantity.items():
            kind = _QUANTITY_SHAPES.get(name)
            if kind is not None and value is not None and not isinstance(value, kind):
                return False
    for inner in contained or ():
        if not isinstance(inner, dict) or not well_formed(inner):
            return False
    return True


@cache
def _model(rtype: str) -> Any:
    module = importlib.import_module("fhir.resources.R4B." + _MODEL_MODULES[rtype])
    return getattr(module, rtype)


def validates(rtype: str, elements: dict[str, Any]) -> bool:
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


def _model_accepts(rtype: str, elements: dict[str, Any]) -> bool:
    try:
        _model(rtype).model_validate(elements)
    except Exception as exc:  # pydantic.ValidationError and friends
        log.debug("%s failed R4B validation (%s)", rtype, type(exc).__name__)
        return False
    return True
