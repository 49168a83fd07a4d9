"""Every code in cards/ is real: ICD-10-CM against the official CDC set, the rest against
the team's verified terminology tables (a wrong code in a clinical system is a defect)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import simple_icd_10_cm as icd
import yaml

from cds_service.engine.terminology import ICD10CM, canonical_system

ROOT = Path(__file__).resolve().parents[1]
CLINICAL = ROOT.parent / "shared" / "clinical"


CARDS = ROOT / "cards"
RULE_FILES = sorted(CARDS.rglob("*.yaml"))  # route files, common.yaml and cards/valuesets/*.yaml
SHARED_FILES = sorted((CARDS / "valuesets").glob("*.yaml"))


def coded_entries():
    """(file, system, code, display, entry) for every coding in every rule file."""
    for path in RULE_FILES:
        data = yaml.safe_load(path.read_text())
        yield from _walk(path.relative_to(CARDS).as_posix(), data)


def _walk(name, node):
    if isinstance(node, dict):
        if {"system", "code", "display"} <= set(node):
            yield name, canonical_system(node["system"]), str(node["code"]), node["display"], node
        for key, value in node.items():
            if key == "ingredients":
                for ingredient in value:
                    if "code" in ingredient:  # else matched by name only
                        yield (
                            name,
                            "rxnorm-ingredient",
                            str(ingredient["code"]),
                            ingredient["display"],
                            ingredient,
                        )
                    for product in ingredient.get("products", []):
                        yield (
                            name,
                            "rxnorm-product",
                            str(product["code"]),
                            product["display"],
                            product,
                        )
            else:
                yield from _walk(name, value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(name, item)


ENTRIES = list(coded_entries())


ICD_ENTRIES = [(n, c, e) for n, s, c, _d, e in ENTRIES if s == ICD10CM]


def test_rule_files_have_codes():
    assert len(ENTRIES) > 100
    assert len(ICD_ENTRIES) > 100  # the parametrized ICD-10-CM check below is never empty


def test_every_shared_value_set_entry_is_checked():
    """The coded value sets live in cards/valuesets/ (issue 11): each of their entries must be
    among the codes checked here, so a moved or renamed file cannot drop out unnoticed."""
    assert len(SHARED_FILES) > 5, "no shared value set files found in cards/valuesets/"
    checked = {(name, str(entry["code"])) for name, _s, _c, _d, entry in ENTRIES if "code" in entry}
    total = 0
    for path in SHARED_FILES:
        name = path.relative_to(CARDS).as_posix()
        for set_name, entries in (yaml.safe_load(path.read_text()).get("value_sets") or {}).items():
            assert entries, f"{name}: value set {set_name} is empty"
            for entry in entries:
                total += 1
                assert (name, str(entry["code"])) in checked, f"{name}: {entry} not checked"
    assert total > 200, f"only {total} value set entries in cards/valuesets/"


@pytest.mark.parametrize(
    "name, code, entry",
    ICD_ENTRIES,
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_icd10cm_code_is_in_the_official_set(name, code, entry):
    assert icd.is_valid_item(code), f"{name}: {code} is not an ICD-10-CM code"
    if entry.get("match") != "prefix" and icd.is_leaf(code):
        official = icd.get_description(code).lower().replace(",", "")
        assert official, code


def _verified_codes() -> set[str]:
    """Codes that the team's references mark verified (route-guide VERIFIED, reference V-...)."""
    verified = set()
    for doc in ("route-guide.md", "rules-reference.md"):
        for line in (CLINICAL / doc).read_text().splitlines():
            if not line.startswith("|"):
                continue
            cells = [c.strip() for c in line.strip("|").split("|")]
            status = cells[-1]
            if (
                "UNVERIFIED" in status
                or status.startswith("U")
                or not ("VERIFIED" in status or status.startswith("V"))
            ):
                continue
            for cell in cells[:-1]:
                verified.update(re.findall(r"\b\d{3,18}(?:-\d)?\b", cell))
    return verified


@pytest.mark.skipif(not CLINICAL.exists(), reason="shared/clinical not beside the checkout")
def test_snomed_loinc_and_rxnorm_codes_are_verified_or_flagged():
    verified = _verified_codes()
    unknown = []
    for name, system, code, display, entry in ENTRIES:
        if system == ICD10CM or system.startswith("urn:") or "non-adherence" in system:
            continue
        if entry.get("status") == "unverified" or entry.get("source"):
            continue  # flagged in the file itself, or a product code with its named source
        if code not in verified:
            unknown.append(f"{name}: {system} {code} {display}")
    assert not unknown, "codes neither verified in shared/clinical nor flagged:\n" + "\n".join(
        unknown
    )
