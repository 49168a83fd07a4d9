"""What one hook call produced, for the response, the log line, suppression and the store."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cds_service.engine import RouteResult
from cds_service.render import evidence

if TYPE_CHECKING:
    from cds_service.engine.order_checks import OrderFinding


@dataclass
class Outcome:
    """What one hook call produced, for the response, the log line and the store."""

    response: dict
    routes: list[str]
    rule_ids: list[str]
    resource_counts: dict[str, int]  # received, by resource type, prefetched and fetched alike
    fingerprints: list[str] = field(default_factory=list)  # per card, see ``fingerprint``
    # Cards left out by a suppression: {"card", "rules", "fingerprint"} each (for the store).
    suppressed: list[dict] = field(default_factory=list)
    # The route results behind patient-view cards, to compose the plan again without a card
    # an override hides (``CdsService.call``); empty for the order services.
    results: list[RouteResult] = field(default_factory=list)

    @property
    def resource_count(self) -> int:
        return sum(self.resource_counts.values())


# What ``json.dumps(material, sort_keys=True, ensure_ascii=False)`` builds on every call,
# built once: the same bytes (stored fingerprints compare them), one object less per card.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False)


def digest(material: object) -> str:
    return hashlib.sha256(_CANONICAL.encode(material).encode()).hexdigest()


def fingerprint(result: RouteResult, card: dict) -> str:
    """What the card shows, as a SHA-256 hex digest: the route, the fired rule ids, the
    indicator, and each evidence line (its text, which holds the values and dates, and the
    FHIR references it rests on), context lines included. A new result, another rule firing
    or a changed value gives another fingerprint; the same chart on another day the same one
    (the evidence text has dates, not ages)."""
    return digest(
        {
            "route": result.route.code,
            "rules": sorted(result.fired),
            "indicator": card.get("indicator"),
            "evidence": sorted(
                [evidence.text(fact), sorted(fact.references)]
                for fact in result.facts + result.context
            ),
        }
    )


def order_fingerprint(finding: OrderFinding, card: dict) -> str:
    """What an order card shows: the check and the rules behind it, the route, the
    indicator, the draft (its code and priority or medicine) and the evidence lines."""
    facts = finding.advice.facts + finding.advice.context if finding.advice else finding.facts
    draft = finding.draft
    return digest(
        {
            "rules": finding.fired,
            "route": ((card.get("source") or {}).get("topic") or {}).get("code"),
            "indicator": card.get("indicator"),
            "draft": [
                draft.get("code") or draft.get("medicationCodeableConcept"),
                draft.get("priority"),
            ],
            "evidence": sorted([evidence.text(f), sorted(f.references)] for f in facts),
        }
    )
