"""The leg-cramp referral service itself, independent of HTTP: discovery and evaluation.

The Flask app and the ``cds-service evaluate`` command both call this, so a hook request
file gives the same cards on the command line as over HTTP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from cds_service import cards, fhir_json, hooks
from cds_service.config import Settings
from cds_service.prefetch import gather, prefetch_keys
from cds_service.record import Record, parse_datetime
from cds_service.rules import RuleSet

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one hook call produced, for the response, the log line and the store."""

    response: dict
    routes: list[str]
    rule_ids: list[str]
    resource_counts: dict[str, int]  # received, by resource type, prefetched and fetched alike

    @property
    def resource_count(self) -> int:
        return sum(self.resource_counts.values())


class CdsService:
    def __init__(self, settings: Settings, ruleset: RuleSet | None = None, fetcher=None):
        self.settings = settings
        self.ruleset = ruleset or RuleSet.load(settings.cards_dir)
        self.keys = prefetch_keys(self.ruleset.observation_codes)
        if fetcher is None:
            from cds_service.fhir_client import FhirFetcher
            fetcher = FhirFetcher(settings)
        self.fetcher = fetcher
        self._fixed_today = parse_datetime(settings.today) if settings.today else None

    def discovery(self) -> dict:
        return hooks.discovery({k.name: k.template for k in self.keys},
                               [route.title for route in self.ruleset.routes])

    def now(self) -> datetime:
        """The clinical 'today' for recency windows: CDS_TODAY when set, else the clock."""
        return self._fixed_today or datetime.now(timezone.utc)

    def evaluate(self, request: dict) -> Outcome:
        """Validate a patient-view request, gather its data, run the rules, render cards."""
        hooks.check("hook-request", fhir_json.schema_view(request), "hook request")
        resources = gather(request, self.keys, self.fetcher)
        patient_id = request["context"]["patientId"]
        record = Record(patient_id, resources, self.now(), self.ruleset.codes)
        results = self.ruleset.evaluate(record)
        rendered = cards.render(results, self.ruleset, patient_id, self.settings)
        if record.left_out:
            log.warning("left out %d resources the rules reached: malformed, or about another "
                        "patient", record.left_out)
        return Outcome({"cards": rendered}, [r.route.code for r in results],
                       [",".join(r.fired) for r in results], record.counts())
