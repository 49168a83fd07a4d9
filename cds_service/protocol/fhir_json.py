"""Decode a hook request, building Python objects only for the FHIR elements rules read.

A patient-view request is mostly FHIR resources, and most of each resource (narrative,
meta, identifiers, extensions, categories, encounters ...) is read by no rule. msgspec
decodes the prefetch resources into ``FhirNode`` structs that hold only the elements the
engine or its R4B validation reads and skips the rest while parsing, which costs about
40% less than building every dict (and leaves less to free afterwards).

A ``FhirNode`` answers ``get``, ``[]``, ``in``, ``items`` like the dict it replaces, so
the record and the rules read prefetched and fetched (plain dict) resources alike. A
request the typed decoder rejects (a Bundle whose ``entry`` is not a list, say) is parsed
again as plain dicts with orjson, and the usual leniency and error messages apply.
"""

from __future__ import annotations

from typing import Any, ClassVar, get_args

import msgspec
import orjson
from msgspec.structs import astuple


class FhirNode(msgspec.Struct, gc=False, tag_field="resourceType"):
    """A resource (or Bundle) reduced to the elements the service reads.

    One subclass per resource type the prefetch carries, chosen by ``resourceType`` while
    parsing, each with only its own elements: a third of the fields of one class for every
    type, which halves the decode at 200 resources (fewer defaults to fill, fewer names to
    match). Every element the engine reads of a type (``validation.ELEMENTS_READ``,
    ``CHOICE_VARIANTS_OF``, the shapes and dates it checks) must be a field of its class:
    one left out would silently read as absent. tests/test_fhir_json.py checks that both
    decoders give the same cards for every real and example request. A resource of
    another type makes the whole request fall back to plain dicts (``decode_request``).
    """

    # Typed as FHIR gives them where the engine relies on the JSON type (record._SHAPES): a
    # resource with a wrongly typed element makes the whole request fall back to plain
    # dicts, where record.well_formed leaves that one resource out. Read on every type:
    id: str | None = None
    subject: dict | None = None
    patient: dict | None = None
    contained: list | None = None
    valueQuantity: dict | None = None

    resourceType: ClassVar[str] = ""  # the tag: set per class, not stored per resource
    _fields: ClassVar[frozenset[str]] = frozenset()  # set for each class below

    # The dict reading the rest of the service does; JSON null reads as absent.
    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key) if key in self._fields else None
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def __iter__(self):
        return iter(self.keys())

    def keys(self) -> list[str]:
        return [name for name, _value in self.items()]

    def items(self) -> list[tuple[str, Any]]:
        return [("resourceType", self.resourceType)] + [
            (name, value)
            for name, value in zip(self.__struct_fields__, astuple(self), strict=True)
            if value is not None
        ]


class ConditionNode(FhirNode, tag="Condition"):
    resourceType: ClassVar[str] = "Condition"
    code: dict | None = None
    clinicalStatus: dict | None = None
    verificationStatus: dict | None = None
    recordedDate: str | None = None
    onsetDateTime: str | None = None
    onsetAge: Any = None
    onsetPeriod: dict | None = None
    onsetRange: Any = None
    onsetString: Any = None
    abatementDateTime: str | None = None
    abatementAge: Any = None
    abatementPeriod: Any = None
    abatementRange: Any = None
    abatementString: Any = None
    abatementBoolean: Any = None


class ObservationNode(FhirNode, tag="Observation"):
    resourceType: ClassVar[str] = "Observation"
    status: str | None = None
    code: dict | None = None
    effectiveDateTime: str | None = None
    effectivePeriod: dict | None = None
    effectiveTiming: Any = None
    effectiveInstant: str | None = None
    issued: str | None = None
    valueString: str | None = None
    interpretation: list | None = None
    component: list | None = None  # a panel's results (record.component_views)


class ProcedureNode(FhirNode, tag="Procedure"):
    resourceType: ClassVar[str] = "Procedure"
    status: str | None = None
    code: dict | None = None
    performedDateTime: str | None = None
    performedPeriod: dict | None = None
    performedString: Any = None
    performedAge: Any = None
    performedRange: Any = None


class MedicationRequestNode(FhirNode, tag="MedicationRequest"):
    resourceType: ClassVar[str] = "MedicationRequest"
    status: str | None = None
    intent: str | None = None
    authoredOn: str | None = None
    medicationCodeableConcept: dict | None = None
    medicationReference: dict | None = None
    effectiveDateTime: str | None = None  # not an element of it, read by the dates anyway
    effectivePeriod: dict | None = None


class MedicationStatementNode(FhirNode, tag="MedicationStatement"):
    resourceType: ClassVar[str] = "MedicationStatement"
    status: str | None = None
    medicationCodeableConcept: dict | None = None
    medicationReference: dict | None = None
    authoredOn: str | None = None  # not an element of it, read by the dates anyway
    effectiveDateTime: str | None = None
    effectivePeriod: dict | None = None


class MedicationNode(FhirNode, tag="Medication"):
    resourceType: ClassVar[str] = "Medication"
    status: str | None = None
    code: dict | None = None
    ingredient: list | None = None


class ServiceRequestNode(FhirNode, tag="ServiceRequest"):
    resourceType: ClassVar[str] = "ServiceRequest"
    status: str | None = None
    intent: str | None = None
    code: dict | None = None
    authoredOn: str | None = None
    category: list | None = None  # "Referral": a locally coded request says what it is here


class PatientNode(FhirNode, tag="Patient"):
    resourceType: ClassVar[str] = "Patient"
    gender: str | None = None
    birthDate: str | None = None
    deceasedBoolean: bool | None = None
    deceasedDateTime: str | None = None


class OperationOutcomeNode(FhirNode, tag="OperationOutcome"):
    """A search warning in a Bundle: kept like any resource no rule reads."""

    resourceType: ClassVar[str] = "OperationOutcome"


Resource = (
    ConditionNode
    | ObservationNode
    | ProcedureNode
    | MedicationRequestNode
    | MedicationStatementNode
    | MedicationNode
    | ServiceRequestNode
    | PatientNode
    | OperationOutcomeNode
)


class BundleEntry(msgspec.Struct, gc=False):
    """A Bundle entry: only its resource is read (prefetch.resources_in)."""

    resource: Resource | None = None


class BundleNode(FhirNode, tag="Bundle"):
    resourceType: ClassVar[str] = "Bundle"
    link: Any = None
    entry: list[BundleEntry] | None = None


NODE_TYPES = (*get_args(Resource), BundleNode)
for _node_type in NODE_TYPES:
    _node_type._fields = frozenset(_node_type.__struct_fields__) | {"resourceType"}


class HookRequest(msgspec.Struct):
    hook: Any = msgspec.UNSET
    hookInstance: Any = msgspec.UNSET
    fhirServer: Any = msgspec.UNSET
    fhirAuthorization: Any = msgspec.UNSET
    context: Any = msgspec.UNSET
    prefetch: dict[str, BundleNode | Resource | None] | None = msgspec.UNSET


_DECODER = msgspec.json.Decoder(HookRequest)


def decode_request(body: bytes) -> object:
    """The request as a dict (prefetch resources as ``FhirNode``); raises
    ``orjson.JSONDecodeError`` for a body that is not JSON."""
    return decode_noting_path(body)[0]


def decode_noting_path(body: bytes) -> tuple[object, bool]:
    """``decode_request``'s answer, and whether the typed decoder took the body (False: it
    was decoded as plain dicts, which reads the same but costs more; counted in a metric)."""
    try:
        decoded = _DECODER.decode(body)
    except Exception:  # an unusual shape, invalid UTF-8, deep nesting ...: orjson decides
        return orjson.loads(body), False  # plain dicts, checked as usual (or "not valid JSON")
    request = {
        name: value
        for name in HookRequest.__struct_fields__
        if (value := getattr(decoded, name)) is not msgspec.UNSET
    }
    return request, True


def schema_view(request: object) -> object:
    """The request as its JSON Schema sees it: a decoded prefetch resource is an object."""
    prefetch = request.get("prefetch") if isinstance(request, dict) else None
    if not isinstance(prefetch, dict) or not any(
        isinstance(v, FhirNode) for v in prefetch.values()
    ):
        return request
    return {
        **request,
        "prefetch": {
            key: {} if isinstance(value, FhirNode) else value for key, value in prefetch.items()
        },
    }


def is_object(value: object) -> bool:
    """A JSON object: a dict, or a resource decoded as ``FhirNode``."""
    return type(value) is dict or isinstance(value, FhirNode)
