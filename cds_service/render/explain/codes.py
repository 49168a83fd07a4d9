"""What a rule reads, listed code by code: value sets, lab concepts, medication classes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cds_service.engine import units
from cds_service.engine.terminology import SHORT_NAMES, Concept, ValueSet
from cds_service.render.evidence import format_number
from cds_service.render.explain.citations import public
from cds_service.render.explain.model import Code, CodeList

if TYPE_CHECKING:
    from cds_service.engine.concepts import ObservationConcept
    from cds_service.engine.model import Route, RuleSet


def short_system(system: str) -> str:
    return SHORT_NAMES.get(system, system)


def unit_label(unit: str) -> str:
    return units.display_label(unit)


def code_of(concept: Concept, prefix: bool = False) -> Code:
    return Code(short_system(concept.system), concept.code, concept.display, prefix)


def concept_words(concept: Concept) -> str:
    """'Creatinine [Mass/volume] in Serum or Plasma (LOINC 2160-0)'."""
    return f"{concept.display} ({short_system(concept.system)} {concept.code})"


def value_set_codes(value_set: ValueSet) -> list[Code]:
    codes = [code_of(c) for c in value_set.exact.values()]
    return codes + [code_of(c, prefix=True) for c in value_set.prefixes]


def value_set_list(value_set: ValueSet) -> CodeList:
    name = value_set.name
    label = value_set.title or name.replace("-", " ")
    return CodeList("value set", name, label, value_set_codes(value_set))


def concept_list(ruleset: RuleSet, concept: ObservationConcept) -> CodeList:
    codes = [code_of(c) for c in concept.value_set.exact.values()]
    return CodeList(
        "lab concept", concept.name, concept.label, codes, _concept_facts(ruleset, concept)
    )


def _concept_facts(ruleset: RuleSet, concept: ObservationConcept) -> list[str]:
    shown = (
        f", shown in {unit_label(concept.display_unit)}"
        if concept.display_unit != concept.unit
        else ""
    )
    facts = [
        f"read in {unit_label(concept.unit) or 'no unit (a ratio)'}{shown}"
        "; results in other units are converted by their UCUM unit, never guessed"
    ]
    if concept.plausible is not None:
        low, high = concept.plausible
        facts.append(
            f"plausible range {format_number(low, 3)}-{format_number(high, 3)} "
            f"{unit_label(concept.unit)}".rstrip()
            + ": a result outside it is shown as implausible and never used"
        )
    if concept.unitless:
        facts.append("a result sent without any unit is read as a ratio")
    if concept.paired_within == "day":
        facts.append("results of the same calendar day are read together; the lowest counts")
    if concept.correction:
        c = concept.correction
        facts.append(
            f"with an albumin below {format_number(c['applies_below'], 2)} g/dL of the "
            f"same day or the day before, the corrected value is used: measured + "
            f"{format_number(c['factor'], 2)} x ({format_number(c['reference'], 2)} - "
            "albumin g/dL)"
        )
    # The concept's note has no typed field: read as written in common.yaml.
    note = ruleset.spec.get("observations", {}).get(concept.name, {}).get("note")
    if note:
        facts.append(public(" ".join(note.split())))
    return facts


def medication_lists(route: Route, classes: list[str]) -> list[CodeList]:
    # Ingredients, products, names and code status have no typed per-class field: the
    # classifier keeps each class as written (``specs``) for these pages.
    by_class = route.medications.specs if route.medications else {}
    lists = []
    for name in classes:
        spec = by_class.get(name)
        if spec is None:
            lists.append(CodeList("medication class", name, name))
        else:
            lists.append(_medication_list(name, spec))
    return lists


def _medication_list(name: str, spec: dict[str, Any]) -> CodeList:
    codes, facts, more = [], [], 0
    for ingredient in spec["ingredients"]:
        names = ingredient.get("names", [])
        if "code" in ingredient:
            unverified = " (code unverified)" if ingredient.get("status") == "unverified" else ""
            also = f"; also by name: {', '.join(names)}" if names else ""
            codes.append(
                Code("RxNorm", str(ingredient["code"]), ingredient["display"] + unverified + also)
            )
        else:
            facts.append(
                f"{ingredient['display']}: matched by name"
                + (f" ({', '.join(names)})" if names else "")
                + ", no verified RxNorm code"
            )
        more += len(ingredient.get("products", []))
    if spec.get("evidence"):
        facts.append(public(f"evidence of association: {spec['evidence']}"))
    if spec.get("note"):
        facts.append(public(" ".join(str(spec["note"]).split())))
    if more:
        facts.append(f"plus {more} RxNorm product codes containing these ingredients")
    return CodeList("medication class", name, spec.get("label", name), codes, facts, more)
