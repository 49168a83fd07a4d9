"""The report as plain data (the ``--json`` output), read from the store's tables.

One row per route and rule, where "rule" is the set of criteria that fired for the card
(the comma-joined criterion ids recorded with it), so every card counts in exactly one row.
One outcome per card: the last feedback item (by outcomeTimestamp, then arrival).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, select, true

from cds_service.storage import Store
from cds_service.storage.database import feedback, issued_card

NO_REASON = "(none)"
COUNTS = ("issued", "accepted", "overridden", "suppressed")


def build_report(store: Store, since: date | None) -> dict:
    """The report as plain data (the ``--json`` output)."""
    start = datetime.combine(since, time.min) if since else None
    card_filter = issued_card.c.issued_at >= start if start is not None else true()
    rows: dict[tuple[str, str], dict] = {}
    with store.engine.connect() as conn:
        _count_cards(conn, card_filter, rows)
        _count_outcomes(_last_outcomes(conn, card_filter), rows)
        unknown = _feedback_for_unknown_cards(conn, start)
    for item in rows.values():
        _finish(item)
    ordered = [rows[key] for key in sorted(rows)]
    return {
        "since": since.isoformat() if since else None,
        "generated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "rows": ordered,
        "totals": {name: sum(r[name] for r in ordered) for name in COUNTS},
        "feedback_for_unknown_cards": unknown,
    }


def _week(day: date | datetime | str) -> str:
    """The Monday of the ISO week holding ``day``, as YYYY-MM-DD."""
    if isinstance(day, str):
        day = date.fromisoformat(day[:10])
    if isinstance(day, datetime):
        day = day.date()
    return (day - timedelta(days=day.weekday())).isoformat()


def _row(rows: dict[tuple[str, str], dict], route: str, rule: str) -> dict:
    return rows.setdefault(
        (route, rule),
        {
            "route": route,
            "rule": rule,
            "issued": 0,
            "accepted": 0,
            "overridden": 0,
            "override_reasons": [],
            "suppressed": 0,
            "acceptance_rate": None,
            "weekly": {},
        },
    )


def _week_of(item: dict, name: str) -> dict:
    return item["weekly"].setdefault(
        name, {"week": name, "issued": 0, "accepted": 0, "overridden": 0, "suppressed": 0}
    )


def _count_cards(conn: Connection, card_filter: Any, rows: dict) -> None:
    """Cards issued and suppressed, per route, rule and week."""
    group = (issued_card.c.route, issued_card.c.rule_ids)
    day = func.date(issued_card.c.issued_at)
    for route, rule, suppressed, on, count in conn.execute(
        select(*group, issued_card.c.suppressed, day, func.count())
        .where(card_filter)
        .group_by(*group, issued_card.c.suppressed, day)
    ):
        name = "suppressed" if suppressed else "issued"
        item = _row(rows, route, rule)
        item[name] += count
        _week_of(item, _week(on))[name] += count


def _last_outcomes(conn: Connection, card_filter: Any) -> list[Any]:
    """One outcome per card: the last feedback item (by outcome time, then arrival)."""
    last: dict[str, Any] = {}
    for fb in conn.execute(
        select(
            feedback.c.card_uuid,
            feedback.c.outcome,
            feedback.c.override_reason_system,
            feedback.c.override_reason_code,
            issued_card.c.route,
            issued_card.c.rule_ids,
            issued_card.c.issued_at,
        )
        .select_from(feedback.join(issued_card, feedback.c.card_uuid == issued_card.c.card_uuid))
        .where(card_filter)
        .order_by(feedback.c.outcome_timestamp, feedback.c.id)
    ):
        last[fb.card_uuid] = fb
    return list(last.values())


def _count_outcomes(outcomes: list[Any], rows: dict) -> None:
    """Accepted and overridden cards per row and week; overridden ones per reason."""
    reasons: dict[tuple[str, str], dict[tuple, int]] = {}
    for fb in outcomes:
        if fb.outcome not in ("accepted", "overridden"):
            continue
        item = _row(rows, fb.route, fb.rule_ids)
        item[fb.outcome] += 1
        _week_of(item, _week(fb.issued_at))[fb.outcome] += 1
        if fb.outcome == "overridden":
            counts = reasons.setdefault((fb.route, fb.rule_ids), {})
            key = (fb.override_reason_system, fb.override_reason_code or NO_REASON)
            counts[key] = counts.get(key, 0) + 1
    for key, counts in reasons.items():
        rows[key]["override_reasons"] = [
            {"system": system, "code": code, "cards": n} for (system, code), n in counts.items()
        ]


def _feedback_for_unknown_cards(conn: Connection, start: datetime | None) -> int:
    unknown_filter = feedback.c.received_at >= start if start is not None else true()
    return conn.execute(
        select(func.count())
        .select_from(
            feedback.outerjoin(issued_card, feedback.c.card_uuid == issued_card.c.card_uuid)
        )
        .where(and_(issued_card.c.card_uuid.is_(None), unknown_filter))
    ).scalar_one()


def _finish(item: dict) -> None:
    """Rates, reasons most frequent first, and the weeks in order."""
    if item["issued"]:
        item["acceptance_rate"] = round(item["accepted"] / item["issued"], 4)
    item["override_reasons"].sort(key=lambda r: (-r["cards"], r["code"]))
    weekly = [item["weekly"][name] for name in sorted(item["weekly"])]
    for entry in weekly:
        entry["acceptance_rate"] = (
            round(entry["accepted"] / entry["issued"], 4) if entry["issued"] else None
        )
    item["weekly"] = weekly
