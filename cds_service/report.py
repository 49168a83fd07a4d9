"""``cds-service report [--since DATE] [--json]``: what clinicians did with the cards.

One row per route and rule, where "rule" is the set of criteria that fired for the card
(the comma-joined criterion ids recorded with it), so every card counts in exactly one row:

- issued: cards issued (since DATE, UTC, when given);
- accepted / overridden: of those cards, how many got at least one accepted / overridden
  feedback item (a card with both, e.g. after a change of mind, counts in both);
- override reasons: overridden cards per reason (system + code; "(none)" when no reason);
- acceptance rate: accepted / issued.

Feedback for cards this service has no record of is counted separately (unknown cards).
Free-text comments are never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime, time

from sqlalchemy import and_, distinct, func, select, true

from cds_service.config import ConfigError, Settings
from cds_service.database import StoreUnavailable, feedback, issued_card
from cds_service.storage import Store

NO_REASON = "(none)"


def register(subparsers) -> dict:
    parser = subparsers.add_parser("report", help="cards issued and clinicians' feedback, "
                                                  "per route and rule")
    parser.add_argument("--since", type=_date, metavar="DATE",
                        help="only cards issued on or after this day (YYYY-MM-DD, UTC)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return {"report": run}


def _date(raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {raw!r}") from None


def run(args, settings: Settings) -> int:
    try:
        store = Store(settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if not store.ensure_schema():
            raise StoreUnavailable("database unavailable")
        data = build_report(store, args.since)
    except Exception as exc:  # any database failure; the message may hold row values
        print(f"cannot read the database: {type(exc).__name__}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(format_table(data))
    return 0


def build_report(store: Store, since: date | None) -> dict:
    """The report as plain data (the ``--json`` output)."""
    start = datetime.combine(since, time.min) if since else None
    card_filter = issued_card.c.issued_at >= start if start is not None else true()
    joined = feedback.join(issued_card, feedback.c.card_uuid == issued_card.c.card_uuid)
    group = (issued_card.c.route, issued_card.c.rule_ids)
    rows: dict[tuple[str, str], dict] = {}

    def row(route: str, rule: str) -> dict:
        return rows.setdefault((route, rule), {
            "route": route, "rule": rule, "issued": 0, "accepted": 0, "overridden": 0,
            "override_reasons": [], "acceptance_rate": None})

    with store.engine.connect() as conn:
        for route, rule, count in conn.execute(
                select(*group, func.count()).where(card_filter).group_by(*group)):
            row(route, rule)["issued"] = count
        for route, rule, outcome, count in conn.execute(
                select(*group, feedback.c.outcome, func.count(distinct(feedback.c.card_uuid)))
                .select_from(joined).where(card_filter)
                .group_by(*group, feedback.c.outcome)):
            if outcome in ("accepted", "overridden"):
                row(route, rule)[outcome] = count
        reasons = (feedback.c.override_reason_system, feedback.c.override_reason_code)
        for route, rule, system, code, count in conn.execute(
                select(*group, *reasons, func.count(distinct(feedback.c.card_uuid)))
                .select_from(joined)
                .where(and_(card_filter, feedback.c.outcome == "overridden"))
                .group_by(*group, *reasons)):
            row(route, rule)["override_reasons"].append(
                {"system": system, "code": code or NO_REASON, "cards": count})
        unknown_filter = feedback.c.received_at >= start if start is not None else true()
        unknown = conn.execute(
            select(func.count()).select_from(feedback.outerjoin(
                issued_card, feedback.c.card_uuid == issued_card.c.card_uuid))
            .where(and_(issued_card.c.card_uuid.is_(None), unknown_filter))).scalar_one()

    for item in rows.values():
        if item["issued"]:
            item["acceptance_rate"] = round(item["accepted"] / item["issued"], 4)
        item["override_reasons"].sort(key=lambda r: (-r["cards"], r["code"]))
    ordered = [rows[key] for key in sorted(rows)]
    return {
        "since": since.isoformat() if since else None,
        "generated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "rows": ordered,
        "totals": {name: sum(r[name] for r in ordered)
                   for name in ("issued", "accepted", "overridden")},
        "feedback_for_unknown_cards": unknown,
    }


def format_table(data: dict) -> str:
    header = ("route", "rule", "issued", "accepted", "overridden", "acceptance")
    lines = [tuple(header)]
    for r in data["rows"]:
        rate = "-" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.0%}"
        lines.append((r["route"], r["rule"] or "-", str(r["issued"]), str(r["accepted"]),
                      str(r["overridden"]), rate))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    title = "Cards and feedback" + (f" since {data['since']}" if data["since"] else "")
    out.append(title)
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(line, widths))).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
        else:
            for reason in data["rows"][index - 1]["override_reasons"]:
                out.append(f"    overridden: {reason['code']} ({reason['system'] or 'no system'})"
                           f": {reason['cards']}")
    if not data["rows"]:
        out.append("(no cards issued)")
    totals = data["totals"]
    out.append(f"total: {totals['issued']} issued, {totals['accepted']} accepted, "
               f"{totals['overridden']} overridden")
    if data["feedback_for_unknown_cards"]:
        out.append(f"feedback for unknown cards: {data['feedback_for_unknown_cards']}")
    return "\n".join(out)
