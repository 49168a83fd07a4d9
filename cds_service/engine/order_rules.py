"""The order-time checks of ``cards/orders/*.yaml``, read once at start-up.

They compare a call's draft orders with the advice the route files give from the chart, and
hold no clinical content of their own beyond their card text: a medicine check names drug
classes of ``valuesets/medications.yaml`` and criteria of the route and shared files by id
(the same thresholds and windows everywhere), a referral check names one of three
comparisons (``REFERRAL_COMPARISONS``). A wrong file stops the service with a message that
names the file and field, as for the route files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds_service.engine.loader import read, schema, validate
from cds_service.engine.model import Link, Route, RuleError, RuleSet, Suppression
from cds_service.engine.shapes import Spec

ORDER_FILES = "orders/*.yaml"  # the order services' checks, under cards/
# What a referral check compares: the draft's specialty already referred to; an urgent red
# flag on record while the draft is not urgent; the evidence supporting another specialty.
REFERRAL_COMPARISONS = ("already-open", "urgent-on-record", "another-supported")


@dataclass(frozen=True)
class Topic:
    code: str
    display: str


@dataclass(frozen=True)
class OrderCheck:
    """One check, as its card needs it; ``hooks``: the hooks it serves."""

    id: str
    hooks: frozenset[str]
    summary: str
    next_step: str
    source_file: str
    topic: Topic | None = None  # None: the card takes the route of the advice it rests on
    indicator: str | None = None
    links: tuple[Link, ...] = ()
    suppression: tuple[Suppression, ...] = ()
    short_summary: str | None = None  # fewer words, when the names make the summary too long

    @property
    def summaries(self) -> tuple[str, ...]:
        """The card's summary templates, the one to try first first."""
        return (self.summary, self.short_summary) if self.short_summary else (self.summary,)


@dataclass(frozen=True)
class ReferralCheck(OrderCheck):
    when: str = "another-supported"
    suggestion: str = ""
    urgent_priorities: frozenset[str] = frozenset()
    same_day_priority: str | None = None


@dataclass(frozen=True)
class MedicationCheck(OrderCheck):
    classes: frozenset[str] = frozenset()
    when_any: tuple[str, ...] = ()  # criterion ids: any holding on the chart fires the check
    routes: tuple[Route, ...] = ()  # the route each criterion of ``when_any`` is read in


@dataclass(frozen=True)
class OrderRules:
    """Every order check of ``cards/orders/``, in file and list order."""

    referral_intents: frozenset[str]
    referral_checks: tuple[ReferralCheck, ...]
    medication_checks: tuple[MedicationCheck, ...]

    def for_hook(self, hook: str) -> OrderRules:
        return OrderRules(
            self.referral_intents,
            tuple(c for c in self.referral_checks if hook in c.hooks),
            tuple(c for c in self.medication_checks if hook in c.hooks),
        )

    @property
    def checks(self) -> tuple[OrderCheck, ...]:
        return (*self.referral_checks, *self.medication_checks)


def load_orders(cards_dir: Path, ruleset: RuleSet, pattern: str = ORDER_FILES) -> OrderRules:
    """The checks of every file ``pattern`` names under ``cards_dir`` (none: no checks)."""
    intents: set[str] = set()
    referral: list[ReferralCheck] = []
    medication: list[MedicationCheck] = []
    seen: dict[str, str] = {}
    root = Path(cards_dir)
    for path in sorted(root.glob(pattern)):
        data = read(path)
        validate(path, data, schema("rules-orders.json"))
        file = path.relative_to(root).as_posix()
        hooks = frozenset(data["hooks"])
        intents.update(data.get("referral_intents", ()))
        for i, spec in enumerate(data.get("referral_checks", ())):
            _once(seen, spec["id"], f"{file}: field referral_checks/{i}")
            referral.append(_referral_check(spec, hooks, file))
        for i, spec in enumerate(data.get("medication_checks", ())):
            where = f"{file}: field medication_checks/{i}"
            _once(seen, spec["id"], where)
            medication.append(_medication_check(spec, hooks, file, where, ruleset))
    return OrderRules(frozenset(intents), tuple(referral), tuple(medication))


def _once(seen: dict[str, str], check_id: str, where: str) -> None:
    if check_id in seen:
        raise RuleError(f"{where}/id: '{check_id}' is already defined ({seen[check_id]})")
    seen[check_id] = where


def _common(spec: Spec, hooks: frozenset[str], file: str) -> dict[str, Any]:
    topic = spec.get("topic")
    return {
        "id": spec["id"],
        "hooks": frozenset(spec.get("hooks", hooks)),
        "summary": spec["summary"],
        "short_summary": spec.get("short_summary"),
        "next_step": " ".join(spec["next_step"].split()),
        "source_file": file,
        "topic": Topic(topic["code"], topic["display"]) if topic else None,
        "indicator": spec.get("indicator"),
        "links": tuple(Link(link["label"], link["url"]) for link in spec.get("links", ())),
        "suppression": tuple(
            Suppression(tuple(s["reasons"]), s["days"]) for s in spec.get("suppression", ())
        ),
    }


def _referral_check(spec: Spec, hooks: frozenset[str], file: str) -> ReferralCheck:
    return ReferralCheck(
        **_common(spec, hooks, file),
        when=spec["when"],
        suggestion=spec["suggestion"],
        urgent_priorities=frozenset(spec.get("urgent_priorities", ())),
        same_day_priority=spec.get("same_day_priority"),
    )


def _medication_check(
    spec: Spec, hooks: frozenset[str], file: str, where: str, ruleset: RuleSet
) -> MedicationCheck:
    """A medicine check; each class must be known to the routes' medication classifier and
    each criterion defined in a route (or used there from cards/shared/)."""
    known = {c for r in ruleset.routes if r.medications for c in r.medications.classes}
    for j, name in enumerate(spec["classes"]):
        if name not in known:
            raise RuleError(f"{where}/classes/{j}: unknown medication class {name!r}")
    routes = []
    for j, criterion_id in enumerate(spec["when_any"]):
        route = next((r for r in ruleset.routes if criterion_id in r.criteria), None)
        if route is None:
            raise RuleError(
                f"{where}/when_any/{j}: no route file defines or uses criterion {criterion_id!r}"
            )
        routes.append(route)
    return MedicationCheck(
        **_common(spec, hooks, file),
        classes=frozenset(spec["classes"]),
        when_any=tuple(spec["when_any"]),
        routes=tuple(routes),
    )
