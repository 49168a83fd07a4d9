"""Lab concepts (common.yaml ``observations``): the codes of one kind of result and the unit
the rules compare it in, with what converting it needs (molar mass, valence, scale)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cds_service.engine import units
from cds_service.engine.terminology import ValueSet


@dataclass
class ObservationConcept:
    name: str
    label: str
    unit: str
    display_unit: str
    value_set: ValueSet
    molar_mass: float | None = None
    valence: int | None = None
    scale: str | None = None
    unit_aliases: dict[str, str] = field(default_factory=dict)
    decimals: int = 1
    paired_within: str | None = None  # "day": same-day results are read together (ABI legs)
    unitless: bool = False  # a ratio may come without any unit
    plausible: tuple[float, float] | None = None  # in ``unit``; outside it a result is not used
    correction: dict[str, Any] | None = None  # albumin correction of total calcium (common.yaml)

    def convert(self, value: float, unit: str, target: str) -> float | None:
        """``value`` in ``unit`` expressed in ``target``, or None (not convertible)."""
        return units.convert(
            value,
            unit,
            target,
            molar_mass=self.molar_mass,
            valence=self.valence,
            scale=self.scale,
        )

    def value_in(self, quantity: object, target: str | None = None) -> float | None:
        """The quantity's value in ``target`` (default: canonical unit), or None."""
        if not isinstance(quantity, dict):
            return None
        value = quantity.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        unit = quantity.get("code") if quantity.get("code") else quantity.get("unit")
        if unit is None and self.unitless:
            unit = self.unit
        if not isinstance(unit, str):
            return None
        unit = self.unit_aliases.get(unit, unit)
        return self.convert(value, unit, target or self.unit)

    def in_display_unit(self, canonical_value: float) -> float:
        shown = self.convert(canonical_value, self.unit, self.display_unit)
        return canonical_value if shown is None else shown
