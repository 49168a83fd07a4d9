"""The CDS services themselves, independent of HTTP: discovery and the one call path.

The Flask app and the ``cds-service evaluate`` command both call ``CdsService.call``, so a
hook request file gives the same cards on the command line as over HTTP, and every declared
service (``protocol/services.py``) is authenticated, suppressed and recorded the same way.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

from cds_service.config import Settings
from cds_service.engine import Record, RuleSet, evaluate, gate_facts, load_rules
from cds_service.engine.dates import Reader
from cds_service.engine.model import URGENT_MAX_DAYS
from cds_service.engine.order_checks import check_orders, drafts_of
from cds_service.engine.order_rules import OrderRules, load_orders
from cds_service.outcome import Outcome, fingerprint, order_fingerprint
from cds_service.protocol import fhir_json, hooks, services
from cds_service.protocol.feedback import ANONYMOUS_CLIENT
from cds_service.protocol.prefetch import PrefetchKey, gather, prefetch_keys
from cds_service.protocol.services import ORDERS, ROUTES, Service
from cds_service.render import cards, order_cards
from cds_service.suppression import (
    INDICATOR_RANK,
    SuppressionPolicy,
    leave_out_suppressed,
    reasons_policy,
    suppression_policy,
)

__all__ = ["INDICATOR_RANK", "CdsService", "Outcome", "fingerprint", "suppression_policy"]
log = logging.getLogger(__name__)


class CdsService:
    def __init__(
        self,
        settings: Settings,
        ruleset: RuleSet | None = None,
        fetcher=None,
        declared: tuple[Service, ...] | None = None,
    ):
        self.settings = settings
        self.ruleset = ruleset or load_rules(settings.cards_dir)
        # The declared services (protocol/services.py), read when the service is made.
        self.services = declared = declared or services.SERVICES
        self.keys = prefetch_keys(self.ruleset.observation_codes)
        services.check_declarations(declared, {k.name for k in self.keys})
        self._keys_of = {s.id: _keys_for(s, self.keys) for s in declared}
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
        self.suppression_policy: SuppressionPolicy = policy if settings.suppression_allowed else {}
        self.urgent_routes = {r.code for r in self.ruleset.routes if r.indicator == "critical"}
        # Each order service's checks, by its rule files (read once, shared by services).
        self.order_rules: dict[str, OrderRules] = {
            s.rule_files: load_orders(settings.cards_dir, self.ruleset, s.rule_files)
            for s in declared
            if s.rules == ORDERS
        }
        self._add_order_policies(settings.suppression_allowed)
        self._evaluators = {ROUTES: self._advise, ORDERS: self._check_orders}

    def discovery(self) -> dict:
        return hooks.discovery(
            list(self.services),
            {k.name: k.template for k in self.keys},
            [route.title for route in self.ruleset.routes],
        )

    def now(self) -> datetime:
        """The clinical 'today' for recency windows: CDS_TODAY when set, else the clock."""
        return self._fixed_today or datetime.now(UTC)

    def call(
        self,
        service_id: str,
        request: object,
        store=None,
        client: str | None = None,
        record: bool = True,
    ) -> Outcome:
        """One hook call of a declared service: its hook and request checked, its rules run,
        the cards an override suppresses left out (with a ``store``), the cards recorded for
        feedback (unless ``record`` is false: the command line replays, it issues nothing).
        ``client``: who called, as authentication established it (None: anyone, and nothing
        is recorded under it)."""
        service = services.find(service_id, self.services)
        outcome = self.evaluate(request, service)
        if store is None:
            return outcome
        assert isinstance(request, dict)  # the schema check made sure
        patient_id = request["context"]["patientId"]
        keys = [self.stored_key(service, route) for route in outcome.routes]
        leave_out_suppressed(outcome, keys, self.suppression_policy, patient_id, store, client)
        if outcome.suppressed and outcome.results:
            self._plan_without_hidden(outcome, patient_id)
        if record:
            # The card records are kept (appended to the on-disk card spool, tens of µs)
            # before the answer leaves: feedback on a card, or the next call, always finds
            # its record. The database write is in the background (storage/card_writer.py).
            store.save_issued_cards(
                request["hookInstance"],
                patient_id,
                self._as_stored(service, outcome.response["cards"]),
                outcome.rule_ids,
                outcome.fingerprints,
                [
                    {**s, "card": self._as_stored(service, [s["card"]])[0]}
                    for s in outcome.suppressed
                ],
                client=client or ANONYMOUS_CLIENT,
            )
        return outcome

    def evaluate(self, request: object, service: Service | None = None) -> Outcome:
        """Check a request against its service (default: the first declared for its hook),
        gather its data and run the service's rules; nothing is suppressed or recorded."""
        if service is None:
            hook = request.get("hook") if isinstance(request, dict) else None
            service = services.for_hook(hook, self.services)
        services.check_hook(service, request)
        hooks.check(service.schema, fhir_json.schema_view(request), "hook request")
        assert isinstance(request, dict)
        resources = gather(request, self._keys_of[service.id], self.fetcher)
        patient_id = request["context"]["patientId"]
        chart = Record(patient_id, resources, self.now(), self.ruleset.codes, local=self.local_zone)
        try:
            outcome = self._evaluators[service.rules](service, request, chart)
        finally:
            chart.release()
        if chart.left_out:
            log.warning(
                "left out %d resources the rules reached: malformed, or about another patient",
                chart.left_out,
            )
        return outcome

    def _plan_without_hidden(self, outcome: Outcome, patient_id: str) -> None:
        """The plan composed again without the cards an override hid, so what they asked
        for goes back to the cards shown and no card points to a hidden one."""
        shown = set(outcome.routes)
        hidden = frozenset(r.route.code for r in outcome.results if r.route.code not in shown)
        rendered = cards.render(outcome.results, self.ruleset, patient_id, self.settings, hidden)
        outcome.response["cards"] = rendered

    def stored_key(self, service: Service, route: str) -> str:
        """What a card is recorded and suppressed under (``cds_service.suppression``)."""
        return route if service.bare_routes else f"{service.id}:{route}"

    def _as_stored(self, service: Service, shown: list[dict]) -> list[dict]:
        """The cards as the store records them: themselves, or for a service whose cards
        are kept under ``service-id:route``, what the store reads (uuid, indicator, key)."""
        if service.bare_routes:
            return shown
        return [
            {
                "uuid": card.get("uuid"),
                "indicator": card.get("indicator"),
                "source": {"topic": {"code": self.stored_key(service, _route_of(card))}},
            }
            for card in shown
        ]

    def _add_order_policies(self, allowed: bool) -> None:
        """The ``suppression`` blocks of the order checks, per order service, under its
        stored keys; a check that takes the advice's route applies to every route."""
        known = {str(r["code"]): str(r["system"]) for r in self.ruleset.override_reasons}
        for service in self.services:
            if service.rules != ORDERS:
                continue
            routes = [(r.code, r.indicator == "critical") for r in self.ruleset.routes]
            for check in self.order_rules[service.rule_files].for_hook(service.hook).checks:
                topics = (
                    [(check.topic.code, check.indicator == "critical")] if check.topic else routes
                )
                for code, critical in topics:
                    where = f"{check.source_file} ({check.id})"
                    reasons = reasons_policy(known, check.suppression, False, where)
                    key = self.stored_key(service, code)
                    if critical:  # the advice is urgent: at most a day, whatever the check
                        self.urgent_routes.add(key)
                    if reasons and allowed:
                        held = self.suppression_policy.setdefault(key, {})
                        for reason, days in reasons.items():
                            days = min(days, URGENT_MAX_DAYS) if critical else days
                            held[reason] = max(days, held.get(reason, 0))

    def _check_orders(self, service: Service, request: dict, chart: Record) -> Outcome:
        """The draft orders of an order hook against the chart's advice (``cards/orders``)."""
        context = request["context"]
        if not gate_facts(self.ruleset, chart) or chart.deceased:
            return Outcome({"cards": []}, [], [], chart.counts())
        advice = evaluate(self.ruleset, chart)
        selections = context.get("selections") if "selections" in service.context else None
        drafts = drafts_of(context.get("draftOrders"), selections)
        rules = self.order_rules[service.rule_files].for_hook(service.hook)
        findings = check_orders(rules, self.ruleset, chart, advice, drafts)
        rendered = order_cards.render(findings, self.ruleset, chart.patient_id, self.settings)
        ranked = sorted(
            zip(findings, rendered, strict=True),
            key=lambda pair: -INDICATOR_RANK.get(pair[1]["indicator"], 0),
        )
        return Outcome(
            {"cards": [card for _finding, card in ranked]},
            [_route_of(card) for _finding, card in ranked],
            [",".join(finding.fired) for finding, _card in ranked],
            chart.counts(),
            [order_fingerprint(finding, card) for finding, card in ranked],
        )

    def _advise(self, service: Service, request: dict, chart: Record) -> Outcome:
        """The route files over the chart: the patient-view advice."""
        results = evaluate(self.ruleset, chart)
        patient_id = chart.patient_id
        rendered = cards.render(results, self.ruleset, patient_id, self.settings)
        return Outcome(
            {"cards": rendered},
            [r.route.code for r in results],
            [",".join(r.fired) for r in results],
            chart.counts(),
            [fingerprint(r, card) for r, card in zip(results, rendered, strict=True)],
            results=results,
        )


def _keys_for(service: Service, keys: list[PrefetchKey]) -> list[PrefetchKey]:
    """The prefetch keys a service asks for, required as it declares."""
    wanted = dict(service.prefetch)
    return [replace(k, required=wanted[k.name]) for k in keys if k.name in wanted]


def _route_of(card: dict) -> str:
    topic = (card.get("source") or {}).get("topic") or {}
    return str(topic.get("code") or "unknown")
