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

from typing import Any

import msgspec
import orjson
from msgspec.structs import astuple


class FhirNode(msgspec.Struct, gc=False):
    """A resource (or Bundle) reduced to the elements the service reads.

    Every element the engine reads (``record._SHAPES``, ``record.ELEMENTS_READ``, every
    variant of the choice elements it validates) must be a field here: an element left
    out would silently read as absent. tests/test_fhir_json.py checks that both decoders
    give the same cards for every real and example request.
    """

    # Typed as FHIR gives them where the engine relies on the JSON type (record._SHAPES): a
    # resource with a wrongly typed element makes the whole request fall back to plain
    # dicts, where record.well_formed leaves that one resource out.
    resourceType: Any = None
    id: str | None = None
    status: str | None = None
    intent: str | None = None
    code: dict | None = None
    subject: dict | None = None
    patient: dict | None = None
    clinicalStatus: dict | None = None
    verificationStatus: dict | None = None
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
    recordedDate: str | None = None
    effectiveDateTime: str | None = None
    effectivePeriod: dict | None = None
    effectiveTiming: Any = None
    effectiveInstant: str | None = None
    issued: str | None = None
    valueQuantity: dict | None = None
    valueString: str | None = None
    interpretation: list | None = None
    performedDateTime: str | None = None
    performedPeriod: dict | None = None
    performedString: Any = None
    performedAge: Any = None
    performedRange: Any = None
    authoredOn: str | None = None
    medicationCodeableConcept: dict | None = None
    medicationReference: dict | None = None
    contained: list | None = None
    ingredient: list | None = None
    gender: str | None = None
    birthDate: str | None = None
    deceasedBoolean: bool | None = None
    deceasedDateTime: str | None = None
    link: Any = None  # Bundle
    entry: list[BundleEntry] | None = None  # Bundle

    # The dict reading the rest of the service does; JSON null reads as absent.
    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key) if key in _FIELDS else None
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
        return [
            name
            for name, value in zip(self.__struct_fields__, astuple(self), strict=True)
            if value is not None
        ]

    def items(self) -> list[tuple[str, Any]]:
        return [
            (name, value)
            for name, value in zip(self.__struct_fields__, astuple(self), strict=True)
            if value is not None
        ]


class BundleEntry(msgspec.Struct, gc=False):
    """A Bundle entry: only its resource is read (prefetch.resources_in)."""

    resource: FhirNode | None = None


_FIELDS = frozenset(FhirNode.__struct_fields__)


class HookRequest(msgspec.Struct):
    hook: Any = msgspec.UNSET
    hookInstance: Any = msgspec.UNSET
    fhirServer: Any = msgspec.UNSET
    fhirAuthorization: Any = msgspec.UNSET
    context: Any = msgspec.UNSET
    prefetch: dict[str, FhirNode | None] | None = msgspec.UNSET


_DECODER = msgspec.json.Decoder(HookRequest)


def decode_request(body: bytes) -> object:
    """The request as a dict (prefetch resources as ``FhirNode``); raises
    ``orjson.JSONDecodeError`` for a body that is not JSON."""
    try:
        decoded = _DECODER.decode(body)
    except Exception:  # an unusual shape, invalid UTF-8, deep nesting ...: orjson decides
        return orjson.loads(body)  # plain dicts, checked as usual (or "not valid JSON")
    return {
        name: value
        for name in HookRequest.__struct_fields__
        if (value := getattr(decoded, name)) is not msgspec.UNSET
    }


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
    return type(value) is dict or type(value) is FhirNode
