"""Which overrides hide which card, and for how long: the ``suppression`` blocks of the rule
files, checked once at start-up, and the filter one call's cards go through.

A card is stored and suppressed under a key: its route for the patient-view service (as
recorded before services were declared), ``service-id:route`` for the others, so an
override of an order card never hides the chart's card of the same route, nor the reverse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from cds_service.engine import RuleError
from cds_service.engine.model import URGENT_MAX_DAYS

if TYPE_CHECKING:
    from cds_service.engine.model import Suppression
    from cds_service.outcome import Outcome

# Stored key -> {(override reason system, code): days}: what suppresses each kind of card.
SuppressionPolicy: TypeAlias = dict[str, dict[tuple[str, str], int]]
INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}


def reasons_policy(
    known: dict[str, str], blocks: tuple[Suppression, ...], critical: bool, where: str
) -> dict[tuple[str, str], int]:
    """{(reason system, reason code): days} of one route's or check's ``suppression``
    blocks; ``known``: each offered reason code's system. A RuleError names ``where`` for
    an unknown reason code, and for a critical card suppressed more than a day."""
    reasons: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(blocks):
        days = entry.days
        if critical and days > URGENT_MAX_DAYS:
            raise RuleError(
                f"{where}: field suppression/{i}/days: a critical "
                f"route is suppressed at most {URGENT_MAX_DAYS} day, not {days}"
            )
        for code in entry.reasons:
            if code not in known:
                raise RuleError(
                    f"{where}: field suppression/{i}/reasons: unknown override reason {code!r}"
                )
            key = (known[code], code)
            reasons[key] = max(days, reasons.get(key, 0))
    return reasons


def suppression_policy(ruleset) -> SuppressionPolicy:
    """Route code -> {(reason system, reason code): days} from each route's ``suppression``
    block. Keyed by the system the cards offer with the code (``common.yaml``), so an
    override naming the code under another system suppresses nothing.

    A RuleError names the file for an unknown reason code, and for a critical (urgent)
    route that asks for more than a day: urgent cards are never suppressed longer."""
    known = {str(reason["code"]): str(reason["system"]) for reason in ruleset.override_reasons}
    policy: SuppressionPolicy = {}
    for route in ruleset.routes:
        reasons = reasons_policy(
            known, route.suppression, route.indicator == "critical", route.source_file
        )
        if reasons:
            policy[route.code] = reasons
    return policy


def leave_out_suppressed(
    outcome: Outcome,
    keys: list[str],
    policy: SuppressionPolicy,
    patient_id: str,
    store,
    client: str | None,
) -> None:
    """Leave out the cards a clinician's override suppresses for this patient, on the calls
    of the client whose card was overridden (None: any client's, for the command line);
    ``keys``: each card's stored key.

    One indexed query, and only when there are cards of a kind that can be suppressed.
    A card comes back when its evidence fingerprint differs from the overridden card's
    or its indicator is higher. If the store cannot be read, every card is shown (the
    store logs it)."""
    if not keys or not any(key in policy for key in keys):
        return
    active = store.active_suppressions(patient_id, keys, client)
    if not active:
        return
    cards = outcome.response["cards"]
    keep = []
    for i, key in enumerate(keys):
        held = active.get(key)
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
