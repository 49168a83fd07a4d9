"""Which cramp-drug classes a medication order belongs to: RxNorm codes first, then names.

The classes come from ``cards/valuesets/medications.yaml``. A multi-ingredient product counts
for every class of its ingredients; a name matched only approximately says so on the card.
An ingredient placed by a code is not placed again by its name: a product code can put one
form of an ingredient in its own class (albuterol tablets, not the inhaled reliever).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING

import orjson

from cds_service.engine.shapes import Resource, Spec
from cds_service.engine.terminology import RXNORM, ValueSet, codings_of

if TYPE_CHECKING:
    from cds_service.engine.record import Record

CLASSIFY_CACHE_SIZE = 4096  # distinct medications remembered per route
KEY_LIMIT = 2048  # bytes of codes and names; a bigger medication is classified, not remembered


@dataclass(frozen=True)
class DrugInfo:
    """One ingredient of a cramp-drug class, as a code or name maps to it."""

    drug_class: str
    class_label: str
    ingredient: str
    evidence: str | None
    verified: bool = True  # the RxNorm code is verified (names: always)


Matches = list[tuple[DrugInfo, str]]  # the classes a medication is in, each with how matched


class NameMatcher:
    """Finds ingredient and brand names (whole words, any case) in medication texts with one
    regex, and failing that a close misspelling ("Simvistatin") with ``difflib``.

    The lookarounds make "estrogens, conjugated (USP)" match even though it ends in ")".
    Matches are remembered per text (``lru_cache``): charts repeat the same product names.
    """

    MEMO_TEXT_LIMIT = 256  # longer texts (a pasted document) are matched, not remembered
    SIMILARITY = 0.88  # difflib ratio: "simvistatin"/"simvastatin" 0.91, but
    # "levalbuterol"/"albuterol" (another drug) 0.86
    SHORTEST_FUZZY = 6  # shorter words are only matched exactly

    def __init__(self, names: dict[str, list[DrugInfo]]) -> None:
        self.infos = names
        alternatives = sorted(names, key=len, reverse=True)  # longest name wins
        self.pattern = re.compile(
            r"(?<!\w)(" + "|".join(map(re.escape, alternatives)) + r")(?!\w)", re.IGNORECASE
        )
        self.single_words = [n for n in names if n.isalpha() and len(n) >= self.SHORTEST_FUZZY]
        self._remembered = lru_cache(maxsize=8192)(self._match)

    def infos_in(self, texts: list[str]) -> list[tuple[DrugInfo, str | None]]:
        """(ingredient and class, the misspelt word or None), in order of appearance."""
        found: list[tuple[DrugInfo, str | None]] = []
        for text in texts:
            matched = (
                self._remembered(text) if len(text) <= self.MEMO_TEXT_LIMIT else self._match(text)
            )
            for info, fuzzy in matched:
                if all(info is not other for other, _ in found):
                    found.append((info, fuzzy))
        return found

    def _match(self, text: str) -> tuple[tuple[DrugInfo, str | None], ...]:
        exact = tuple(
            (info, None)
            for match in self.pattern.finditer(text)
            for info in self.infos[match.group(1).lower()]
        )
        if exact:
            return exact
        fuzzy: list[tuple[DrugInfo, str | None]] = []
        for word in re.findall(rf"[A-Za-z]{{{self.SHORTEST_FUZZY},}}", text):
            word_lower = word.lower()
            close = [
                name
                for name in difflib.get_close_matches(
                    word_lower, self.single_words, n=1, cutoff=self.SIMILARITY
                )
                if name[0] == word_lower[0]
            ]  # a misspelling keeps its first letter
            fuzzy += [(info, word) for name in close for info in self.infos[name]]
        return tuple(fuzzy)


class MedicationClassifier:
    """The cramp-drug classes of a route: RxNorm codes -> ingredients, and their names."""

    def __init__(self, classes: list[Spec]) -> None:
        self.specs = {c["class"]: c for c in classes}  # as written: explanation pages only
        self.classes = set(self.specs)
        self.codes: dict[tuple[str, str], list[DrugInfo]] = {}
        entries: list[Spec] = []  # the RxNorm codes, as value set entries
        names: dict[str, list[DrugInfo]] = {}
        for drug_class in classes:
            for ingredient in drug_class["ingredients"]:
                info = DrugInfo(
                    drug_class["class"],
                    drug_class["label"],
                    ingredient["display"],
                    drug_class.get("evidence"),
                )
                # Product codes carry their source; an ingredient code may be unverified.
                codes = (
                    [(ingredient, ingredient.get("status") != "unverified")]
                    if "code" in ingredient
                    else []
                )  # no verified code: matched by name
                codes += [(product, True) for product in ingredient.get("products", [])]
                for code, verified in codes:
                    coded = replace(info, verified=verified)
                    entries.append(
                        {"system": "rxnorm", "code": code["code"], "display": code["display"]}
                    )
                    bucket = self.codes.setdefault((RXNORM, str(code["code"])), [])
                    if coded not in bucket:
                        bucket.append(coded)
                # `by_name: false`: a form of an ingredient another class names (oral
                # albuterol beside the inhaled reliever) is known by its product codes only.
                for name in (
                    [ingredient["display"], *ingredient.get("names", [])]
                    if ingredient.get("by_name", True)
                    else []
                ):
                    names.setdefault(name.lower(), []).append(info)
        self.value_set = ValueSet.from_entries("medications", entries)  # may be empty
        self.names = NameMatcher(names) if names else None
        self._remembered = lru_cache(maxsize=CLASSIFY_CACHE_SIZE)(self._classify_key)

    def classify(self, resource: Resource, record: Record) -> Matches:
        """Every cramp-drug class a medication belongs to, with how it was matched.
        Remembered by the medication's codes and names (charts repeat the same products)."""
        concept = resource.get("medicationCodeableConcept")
        medication = record.medication_of(resource)
        code = medication.get("code") if medication else None
        ingredients = medication.get("ingredient") if medication else None
        reference = resource.get("medicationReference")
        try:
            key = orjson.dumps((concept, code, ingredients, reference))
        except (orjson.JSONEncodeError, TypeError):  # e.g. an integer beyond 64 bits
            key = None
        if key is None or len(key) > KEY_LIMIT:  # odd or huge: classify, not keep
            return self._classify(concept, code, ingredients, reference)
        return self._remembered(key)

    def _classify_key(self, key: bytes) -> Matches:
        return self._classify(*orjson.loads(key))

    def _classify(
        self, concept: object, code: object, ingredients: object, reference: object
    ) -> Matches:
        concepts = [concept, code]
        for ingredient in ingredients if isinstance(ingredients, list) else ():
            if isinstance(ingredient, dict):
                concepts.append(ingredient.get("itemCodeableConcept"))
        texts = (
            [reference["display"]]
            if isinstance(reference, dict) and isinstance(reference.get("display"), str)
            else []
        )
        matches: Matches = []
        classes: set[str] = set()
        coded: set[str] = set()  # ingredients a code placed: their names say nothing more
        for c in concepts:
            for system, rx_code, display in codings_of(c):
                if system == RXNORM:
                    for info in self.codes.get((system, rx_code), ()):
                        flag = "" if info.verified else ", code not verified"
                        matches.append((info, f"RxNorm {rx_code}{flag}"))
                        classes.add(info.drug_class)
                        coded.add(info.ingredient)
                if display:
                    texts.append(display)
            if isinstance(c, dict) and isinstance(c.get("text"), str):
                texts.append(c["text"])
        for info, misspelt in self.names.infos_in(texts) if self.names is not None else ():
            if info.drug_class not in classes and info.ingredient not in coded:
                how = (
                    f"matched by a similar name only ('{misspelt[:30]}'), check it"
                    if misspelt
                    else "matched by name"
                )
                matches.append((info, how))
                classes.add(info.drug_class)
        return matches
