"""Code systems and value sets: which coding in a resource means which concept.

Rule files name systems by short aliases (``snomed``, ``icd10cm``, ``loinc``, ``rxnorm``);
resources use canonical URIs or, in older feeds, OIDs. Everything is normalised to the
canonical URI and, for ICD-10-CM, to the dotted upper-case code before comparing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"

ALIASES = {
    "snomed": SNOMED,
    "icd10cm": ICD10CM,
    "loinc": LOINC,
    "rxnorm": RXNORM,
}

_CANONICAL = {
    SNOMED: SNOMED,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "http://snomed.info/sct/": SNOMED,
    ICD10CM: ICD10CM,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10-us": ICD10CM,
    LOINC: LOINC,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "http://loinc.org/": LOINC,
    RXNORM: RXNORM,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
}

SHORT_NAMES = {SNOMED: "SNOMED CT", ICD10CM: "ICD-10-CM", LOINC: "LOINC", RXNORM: "RxNorm"}


def canonical_system(system: object) -> str | None:
    if not isinstance(system, str):
        return None
    system = system.strip()
    return ALIASES.get(system) or _CANONICAL.get(system) or system


def normalise_code(system: str | None, code: object) -> str | None:
    """ICD-10-CM codes arrive with or without the dot and in any case: store them dotted."""
    if not isinstance(code, str) or not code.strip():
        return None
    code = code.strip()
    if system == ICD10CM:
        code = code.upper()
        if "." not in code and len(code) > 3:
            code = code[:3] + "." + code[3:]
    return code


MAX_CODE_LENGTH = 256  # longer "codes" are not codes: never cached, never matched


def _normalised(system: object, code: object) -> tuple[str | None, str | None]:
    """(canonical system, normalised code); memoised, as real records repeat a few codes."""
    if not (isinstance(system, str) and isinstance(code, str)):
        return None, None
    if len(system) > MAX_CODE_LENGTH or len(code) > MAX_CODE_LENGTH:
        return None, None
    return _normalised_cached(system, code)


@lru_cache(maxsize=8192)
def _normalised_cached(system: str, code: str) -> tuple[str | None, str | None]:
    canonical = canonical_system(system)
    return canonical, normalise_code(canonical, code)


def codings_of(concept: object) -> list[tuple[str, str, str | None]]:
    """(system, code, display) for every usable coding of a CodeableConcept dict. A list,
    not a generator: concepts carry one or two codings, and a generator costs more."""
    if not isinstance(concept, dict):
        return []
    codings = concept.get("coding")
    if type(codings) is not list:
        return []
    found = []
    for coding in codings:
        if not isinstance(coding, dict):
            continue
        system, code = _normalised(coding.get("system"), coding.get("code"))
        if system and code:
            display = coding.get("display")
            found.append((system, code, display if isinstance(display, str) else None))
    return found


@dataclass(frozen=True)
class Concept:
    system: str
    code: str
    display: str

    @property
    def label(self) -> str:
        return f"{SHORT_NAMES.get(self.system, self.system)} {self.code}"


class ValueSet:
    """A compiled code list: exact (system, code) members plus ICD-10-CM prefixes."""

    def __init__(
        self, name: str, members: list[Concept], prefixes: list[Concept], title: str | None = None
    ):
        self.name = name
        self.title = title  # its plain name for reviewers (``titles:`` in cards/valuesets/)
        self.exact = {(m.system, m.code): m for m in members}
        self.prefixes = tuple(prefixes)

    @cached_property
    def rank(self) -> dict[tuple[str, str], int]:
        """Each exact member's place in the list, for ordering results of one instant."""
        return {key: i for i, key in enumerate(self.exact)}

    def match(self, system: str, code: str) -> Concept | None:
        hit = self.exact.get((system, code))
        if hit is not None:
            return hit
        for prefix in self.prefixes:
            if prefix.system == system and code.startswith(prefix.code):
                return prefix
        return None

    @classmethod
    def from_entries(
        cls, name: str, entries: list[dict[str, Any]], title: str | None = None
    ) -> ValueSet:
        members: list[Concept] = []
        prefixes: list[Concept] = []
        for entry in entries:
            system = canonical_system(entry["system"]) or str(entry["system"])
            code = normalise_code(system, str(entry["code"])) or str(entry["code"])
            concept = Concept(system, code, entry["display"])
            (prefixes if entry.get("match") == "prefix" else members).append(concept)
        return cls(name, members, prefixes, title)


Owners = tuple[tuple[ValueSet, Concept], ...]  # the value sets a code is in, each with its match


class CodeIndex:
    """Which of the rules' value sets each code belongs to, built once at start-up.

    A record files a resource only under the value sets one of its codes belongs to, so the
    many codes no rule reads (vital signs, surveys, unrelated problems) cost one dict lookup
    each. Lookups are memoised on the raw (system, code) strings a resource carries.
    """

    MEMO_SIZE = 65536  # distinct raw codings remembered (then the memo starts afresh)

    def __init__(self, value_sets: Iterable[ValueSet]) -> None:
        self.value_sets = tuple(dict.fromkeys(value_sets))  # registered, in order, once each
        self.registered = frozenset(self.value_sets)
        self._exact: dict[tuple[str, str], list[ValueSet]] = {}
        self._prefixes: dict[tuple[str, str], list[ValueSet]] = {}
        for value_set in self.value_sets:
            for key in value_set.exact:
                self._exact.setdefault(key, []).append(value_set)
            for prefix in value_set.prefixes:
                self._prefixes.setdefault((prefix.system, prefix.code), []).append(value_set)
        # (raw system, raw code) -> owners: a plain dict, which ``Record`` reads directly in
        # its indexing loop (a lookup per resource, no call); filled by ``owners``.
        self.memo: dict[tuple[Any, Any], Owners] = {}

    def owners(self, system: object, code: object) -> Owners:
        """((value set, matched concept), ...) for a coding's raw system and code."""
        if type(system) is str and type(code) is str:
            key = (system, code)
            found = self.memo.get(key)
            if found is not None:
                return found
            found = self._owners_of_raw(system, code)
            if len(system) <= MAX_CODE_LENGTH and len(code) <= MAX_CODE_LENGTH:
                if len(self.memo) >= self.MEMO_SIZE:
                    self.memo.clear()
                self.memo[key] = found  # odd and long ones are not worth remembering
            return found
        return ()  # a system or code that is not a string matches nothing

    def _owners_of_raw(self, system: str, code: str) -> Owners:
        return self._owners(*_normalised(system, code))

    def _owners(self, system: str | None, code: str | None) -> Owners:
        if not system or not code:
            return ()
        candidates = list(self._exact.get((system, code), ()))
        for end in range(1, len(code) + 1):
            candidates += self._prefixes.get((system, code[:end]), ())
        owners: list[tuple[ValueSet, Concept]] = []
        for value_set in dict.fromkeys(candidates):
            concept = value_set.match(system, code)  # an exact member wins over a prefix
            if concept is not None:
                owners.append((value_set, concept))
        return tuple(owners)
