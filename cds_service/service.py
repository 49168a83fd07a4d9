"""The leg-cramp referral service itself, independent of HTTP: discovery and evaluation.

The Flask app and the ``cds-service evaluate`` command both call this, so a hook request
file gives the same cards on the command line as over HTTP.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeAlias

from cds_service.config import Settings
from cds_service.engine import Record, RouteResult, RuleError, RuleSet, evaluate, load_rules
from cds_service.engine.dates import Reader
from cds_service.engine.model import URGENT_MAX_DAYS
from cds_service.protocol import fhir_json, hooks
from cds_service.protocol.prefetch import gather, prefetch_keys
from cds_service.render import cards, evidence

log = logging.getLogger(__name__)


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

    @property
    def resource_count(self) -> int:
        return sum(self.resource_counts.values())


INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}


def fingerprint(result: RouteResult, card: dict) -> str:
    """What the card shows, as a SHA-256 hex digest: the route, the fired rule ids, the
    indicator, and each evidence line (its text, which holds the values and dates, and the
    FHIR references it rests on), context lines included. A new result, another rule firing
    or a changed value gives another fingerprint; the same chart on another day the same one
    (the evidence text has dates, not ages)."""
    material = {
        "route": result.route.code,
        "rules": sorted(result.fired),
        "indicator": card.get("indicator"),
        "evidence": sorted(
            [evidence.text(fact), sorted(fact.references)] for fact in result.facts + result.context
        ),
    }
    return hashlib.sha256(
        json.dumps(material, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


# Route code -> {(override reason system, code): days}: what suppresses each route's card.
SuppressionPolicy: TypeAlias = dict[str, dict[tuple[str, str], int]]


def suppression_policy(ruleset: RuleSet) -> SuppressionPolicy:
    """Route code -> {(reason system, reason code): days} from each route's ``suppression``
    block. Keyed by the system the cards offer with the code (``common.yaml``), so an
    override naming the code under another system suppresses nothing.

    A RuleError names the file for an unknown reason code, and for a critical (urgent)
    route that asks for more than a day: urgent cards are never suppressed longer."""
    known = {str(reason["code"]): str(reason["system"]) for reason in ruleset.override_reasons}
    policy: SuppressionPolicy = {}
    for route in ruleset.routes:
        reasons: dict[tuple[str, str], int] = {}
        for i, entry in enumerate(route.suppression):
            days = entry.days
            if route.indicator == "critical" and days > URGENT_MAX_DAYS:
                raise RuleError(
                    f"{route.source_file}: field suppression/{i}/days: a critical "
                    f"route is suppressed at most {URGENT_MAX_DAYS} day, not {days}"
                )
            for code in entry.reasons:
                if code not in known:
                    raise RuleError(
                        f"{route.source_file}: field suppression/{i}/reasons: "
                        f"unknown override reason {code!r}"
                    )
                key = (known[code], code)
                reasons[key] = max(days, reasons.get(key, 0))
        if reasons:
            policy[route.code] = reasons
    return policy


class CdsService:
    def __init__(self, settings: Settings, ruleset: RuleSet | None = None, fetcher=None):
        self.settings = settings
        self.ruleset = ruleset or load_rules(settings.cards_dir)
        self.keys = prefetch_keys(self.ruleset.observation_codes)
        if fetcher is None:
            from cds_service.protocol.fhir_client import FhirFetcher

            fetcher = FhirFetcher(settings)
        self.fetcher = fetcher
        self.local_zone = settings.local_zone
        today = Reader(self.local_zone).date(settings.today) if settings.today else None
        # A plain datetime: sums with a ``When`` would make ``When``s (each with a dict).
        self._fixed_today = (
            datetime.fromtimestamp(today.timestamp(), today.tzinfo)
            if isinstance(today, datetime)
            else None
        )
        policy = suppression_policy(self.ruleset)  # checked whether it applies or not
        # Without verified clients anyone could hide a card: no suppression unless allowed.
        self.suppression_policy = policy if settings.suppression_allowed else {}
        self.urgent_routes = {r.code for r in self.ruleset.routes if r.indicator == "critical"}

    def discovery(self) -> dict:
        return hooks.discovery(
            {k.name: k.template for k in self.keys}, [route.title for route in self.ruleset.routes]
        )

    def now(self) -> datetime:
        """The clinical 'today' for recency windows: CDS_TODAY when set, else the clock."""
        return self._fixed_today or datetime.now(UTC)

    def evaluate(self, request: dict) -> Outcome:
        """Validate a patient-view request, gather its data, run the rules, render cards."""
        hooks.check("hook-request", fhir_json.schema_view(request), "hook request")
        resources = gather(request, self.keys, self.fetcher)
        patient_id = request["context"]["patientId"]
        record = Record(
            patient_id, resources, self.now(), self.ruleset.codes, local=self.local_zone
        )
        try:
            results = evaluate(self.ruleset, record)
        finally:
            record.release()
        rendered = cards.render(results, self.ruleset, patient_id, self.settings)
        if record.left_out:
            log.warning(
                "left out %d resources the rules reached: malformed, or about another patient",
                record.left_out,
            )
        return Outcome(
            {"cards": rendered},
            [r.route.code for r in results],
            [",".join(r.fired) for r in results],
            record.counts(),
            [fingerprint(r, card) for r, card in zip(results, rendered, strict=True)],
        )

    def apply_suppressions(
        self, outcome: Outcome, patient_id: str, store, client: str | None = None
    ) -> None:
        """Leave out the cards a clinician's override suppresses for this patient, on the
        calls of the client whose card was overridden (None: any client's, for the command
        line).

        One indexed query, and only when there are cards of a route that can be suppressed.
        A card comes back when its evidence fingerprint differs from the overridden card's
        or its indicator is higher. If the store cannot be read, every card is shown (the
        store logs it)."""
        if not outcome.routes or not any(
            route in self.suppression_policy for route in outcome.routes
        ):
            return
        active = store.active_suppressions(patient_id, outcome.routes, client)
        if not active:
            return
        cards = outcome.response["cards"]
        keep = []
        for i, route in enumerate(outcome.routes):
            held = active.get(route)
            card = cards[i]
            if held is not None:
                same = store.fingerprint_key(outcome.fingerprints[i]) == held["fingerprint"]
                rank = INDICATOR_RANK.get(card.get("indicator"), 0)
                higher = rank > INDICATOR_RANK.get(held["indicator"] or "", 0)
                if same and not higher:
                    outcome.suppressed.append(
                        {
                            "card": card,
                            "rules": outcome.rule_ids[i],
                            "fingerprint": outcome.fingerprints[i],
                        }
                    )
                    continue
            keep.append(i)
        if len(keep) == len(cards):
            return
        outcome.response["cards"] = [cards[i] for i in keep]
        outcome.routes = [outcome.routes[i] for i in keep]
        outcome.rule_ids = [outcome.rule_ids[i] for i in keep]
        outcome.fingerprints = [outcome.fingerprints[i] for i in keep]
