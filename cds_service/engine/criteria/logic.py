"""Criteria made of other criteria: all of them, or any of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cds_service.engine.criteria.base import Criterion, Definitions, Need
from cds_service.engine.facts import Fact
from cds_service.engine.shapes import Spec

if TYPE_CHECKING:
    from cds_service.engine.evaluation import Evaluation


@dataclass
class AllOf(Criterion):
    """Holds when every part holds; its facts are all of theirs."""

    type_name = "all"

    of: tuple[str, ...]
    # ``of`` in the order parts are tried: worked out on the first evaluation (a criterion
    # belongs to one route, whose needs do not change).
    _tried: tuple[str, ...] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def own_fields(cls, spec: Spec, defs: Definitions, where: str) -> dict[str, Any]:
        return dict(of=tuple(defs.criterion(ref, where) for ref in spec["of"]))

    @property
    def parts(self) -> tuple[str, ...]:
        return self.of

    def need(self) -> Need:
        return Need("all", parts=self.of)

    def evaluate(self, ev: Evaluation) -> list[Fact]:
        """Stops at the first part that does not hold, trying first the parts that need
        data (a coded trigger) and last those that cannot be ruled out up front (a missing
        result, which reads every test of its groups). The facts keep the order of ``of``."""
        tried = self._tried
        if tried is None:
            needs = ev.route.needs
            tried = self._tried = tuple(sorted(self.of, key=lambda r: needs[r].kind == "always"))
        found: dict[str, list[Fact]] = {}
        for ref in tried:
            part = found[ref] = ev.check(ref)
            if not part:
                return []
        return [fact for ref in self.of for fact in found[ref]]


@dataclass
class AnyOf(AllOf):
    """Holds when any part holds; its facts are those of every part that holds."""

    type_name = "any"

    def need(self) -> Need:
        return Need("any", parts=self.of)

    def evaluate(self, ev: Evaluation) -> list[Fact]:
        return [fact for ref in self.of for fact in ev.check(ref)]
