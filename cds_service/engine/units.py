"""UCUM quantity conversion for the units laboratories report.

A value is converted only when its UCUM code is known here; anything else returns ``None``
and the caller ignores the value for thresholds (never guess a unit). Analyte-specific
facts (molar mass, valence, the HbA1c NGSP/IFCC scale) come from the rule files.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Common non-UCUM spellings that are unambiguous, mapped to their UCUM code.
_SPELLINGS = {
    "mEq/L": "meq/L",
    "mIU/L": "m[IU]/L",
    "uIU/mL": "u[IU]/mL",
    "µIU/mL": "u[IU]/mL",
    "µmol/L": "umol/L",
    "µg/dL": "ug/dL",
    "mcg/dL": "ug/dL",
    "mcg/L": "ug/L",
    "mL/min/1.73.m2": "mL/min/{1.73_m2}",
    "mL/min/1.73m2": "mL/min/{1.73_m2}",
    "mL/min/{1.73m2}": "mL/min/{1.73_m2}",
    "degF": "[degF]",
    "°F": "[degF]",
    "°C": "Cel",
    "IU/L": "[IU]/L",
}

# (dimension, factor to the dimension's base unit)
_LINEAR = {
    # mass concentration, base g/L
    "g/L": ("mass", 1.0),
    "g/dL": ("mass", 10.0),
    "mg/dL": ("mass", 1e-2),
    "mg/L": ("mass", 1e-3),
    "mg/mL": ("mass", 1.0),
    "ug/mL": ("mass", 1e-3),
    "ug/dL": ("mass", 1e-5),
    "ug/L": ("mass", 1e-6),
    "ng/mL": ("mass", 1e-6),
    "ng/dL": ("mass", 1e-8),
    "ng/L": ("mass", 1e-9),
    "pg/mL": ("mass", 1e-9),
    # amount-of-substance concentration, base mol/L
    "mol/L": ("molar", 1.0),
    "mmol/L": ("molar", 1e-3),
    "umol/L": ("molar", 1e-6),
    "nmol/L": ("molar", 1e-9),
    "pmol/L": ("molar", 1e-12),
    # equivalents concentration, base eq/L
    "eq/L": ("equiv", 1.0),
    "meq/L": ("equiv", 1e-3),
    # catalytic activity concentration, base U/L (an enzyme IU is a U)
    "U/L": ("enzyme", 1.0),
    "[IU]/L": ("enzyme", 1.0),
    "ukat/L": ("enzyme", 60.0),
    # arbitrary international units for hormones (TSH), base [IU]/L
    "m[IU]/L": ("hormone", 1e-3),
    "u[IU]/mL": ("hormone", 1e-3),
    "m[IU]/mL": ("hormone", 1.0),
    # filtration rate normalised to body surface area
    "mL/min/{1.73_m2}": ("gfr", 1.0),
    # plain ratios
    "1": ("ratio", 1.0),
    "{ratio}": ("ratio", 1.0),
    "{index}": ("ratio", 1.0),
}

_TEMPERATURE = {"Cel", "[degF]", "K"}


def _known(unit: str) -> bool:
    return unit in _LINEAR or unit in _TEMPERATURE or unit in {"%", "mmol/mol"}


@lru_cache(maxsize=1024)
def _ucum_code(unit: str) -> str | None:
    unit = unit.strip()
    unit = _SPELLINGS.get(unit, unit)
    if _known(unit):
        return unit
    litre = re.sub(r"/(m|d|u)?l$", lambda m: "/" + (m.group(1) or "") + "L", unit)
    litre = _SPELLINGS.get(litre, litre)
    return litre if _known(litre) else None


def ucum_code(unit: object) -> str | None:
    """The UCUM code for a Quantity's ``code`` (or ``unit``) string, or None if unknown.

    UCUM accepts the litre as ``l`` or ``L``; ``mmol/l`` and ``mg/dl`` are the same units.
    """
    if not isinstance(unit, str) or len(unit) > 64:  # no UCUM unit of ours is that long
        return None
    return _ucum_code(unit)


def convert(
    value: float,
    unit: str,
    target: str,
    *,
    molar_mass: float | None = None,
    valence: int | None = None,
    scale: str | None = None,
) -> float | None:
    """Convert ``value`` from UCUM ``unit`` to ``target``; None when not convertible."""
    source, goal = ucum_code(unit), ucum_code(target)
    if source is None or goal is None:
        return None
    return _convert(value, source, goal, molar_mass, valence, scale)


def _convert(
    value: float,
    unit: str,
    target: str,
    molar_mass: float | None,
    valence: int | None,
    scale: str | None,
) -> float | None:
    if unit == target:
        return float(value)
    if unit in _TEMPERATURE and target in _TEMPERATURE:
        return _from_kelvin(_to_kelvin(value, unit), target)
    if scale == "hba1c" and {unit, target} == {"%", "mmol/mol"}:
        return _hba1c(value, unit)
    if unit not in _LINEAR or target not in _LINEAR:
        return None
    (dim_from, f_from), (dim_to, f_to) = _LINEAR[unit], _LINEAR[target]
    base: float | None = value * f_from
    if dim_from != dim_to:
        base = _bridge(value * f_from, dim_from, dim_to, molar_mass, valence)
    return None if base is None else base / f_to


def _bridge(
    base: float, dim_from: str, dim_to: str, molar_mass: float | None, valence: int | None
) -> float | None:
    """Cross between mass, molar and equivalent concentrations using analyte facts."""
    if dim_from == "equiv":
        if not valence:
            return None
        base, dim_from = base / valence, "molar"
    if dim_from == "mass" and dim_to in {"molar", "equiv"}:
        if not molar_mass:
            return None
        base, dim_from = base / molar_mass, "molar"
    if dim_from == "molar" and dim_to == "mass":
        return base * molar_mass if molar_mass else None
    if dim_from == "molar" and dim_to == "equiv":
        return base * valence if valence else None
    if dim_from == dim_to:
        return base
    return None


def _to_kelvin(value: float, unit: str) -> float:
    if unit == "Cel":
        return value + 273.15
    if unit == "[degF]":
        return (value - 32.0) * 5.0 / 9.0 + 273.15
    return value


def _from_kelvin(kelvin: float, unit: str) -> float:
    if unit == "Cel":
        return kelvin - 273.15
    if unit == "[degF]":
        return (kelvin - 273.15) * 9.0 / 5.0 + 32.0
    return kelvin


def _hba1c(value: float, unit: str) -> float:
    """NGSP % <-> IFCC mmol/mol master equation: IFCC = 10.929 x (NGSP - 2.15)."""
    if unit == "%":
        return 10.929 * (value - 2.15)
    return value / 10.929 + 2.15


_LABELS = {
    "mL/min/{1.73_m2}": "mL/min/1.73m²",
    "Cel": "°C",
    "[degF]": "°F",
    "meq/L": "mEq/L",
    "m[IU]/L": "mIU/L",
    "u[IU]/mL": "µIU/mL",
    "m[IU]/mL": "mIU/mL",
    "[IU]/L": "IU/L",
    "umol/L": "µmol/L",
    "ug/dL": "µg/dL",
    "ug/L": "µg/L",
    "ug/mL": "µg/mL",
    "1": "",
}

# A UCUM annotation ("{FEU}") is a comment in curly braces: clinicians read it as a word after
# the unit ("ng/mL FEU"); a dimensionless annotation ("{ratio}") is no unit at all.
_ANNOTATION = re.compile(r"\{([^{}]*)\}")
_ANNOTATION_WORDS = {"ratio": "", "index": "", "score": "", "1.73_m2": "1.73m²"}


def display_label(unit: str) -> str:
    """How a UCUM code is written for clinicians (mL/min/1.73m², °C, µmol/L, ng/mL FEU):
    never with a UCUM annotation in braces."""
    unit = _SPELLINGS.get(unit, unit)
    if unit in _LABELS:
        return _LABELS[unit]
    if unit.startswith("{") and "}/" in unit:  # "{cells}/uL": the annotation is what is counted
        counted, _, per = unit[1:].partition("}")
        return _ANNOTATION_WORDS.get(counted, counted) + display_label(per)
    words = [_ANNOTATION_WORDS.get(a, a.replace("_", " ")) for a in _ANNOTATION.findall(unit)]
    core = _ANNOTATION.sub("", unit).strip()
    core = _LABELS.get(_SPELLINGS.get(core, core), core)
    return " ".join(part for part in [core, *words] if part)
