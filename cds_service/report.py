"""``cds-service report [--since DATE] [--json | --html FILE]``: what clinicians did with
the cards.

One row per route and rule, where "rule" is the set of criteria that fired for the card
(the comma-joined criterion ids recorded with it), so every card counts in exactly one row:

- issued: cards issued (since DATE, UTC, when given), not counting suppressed ones;
- accepted / overridden: of those cards, how many ended accepted / overridden. One outcome
  per card, the last (by outcomeTimestamp): the CDS Hooks sandbox sends "accepted" for a
  click on a suggestion and then "overridden" for the dismissal, which counts as overridden;
- override reasons: overridden cards per reason (system + code; "(none)" when no reason);
- suppressed: cards rendered but left out because an override suppressed them;
- acceptance rate: accepted / issued, overall and per week (weeks start on Monday, UTC).

Feedback for cards this service has no record of is counted separately (unknown cards).
Free-text comments are never printed, nor anything about a patient.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import and_, func, select, true

from cds_service.config import ConfigError, Settings
from cds_service.database import StoreUnavailable, feedback, issued_card
from cds_service.storage import Store

NO_REASON = "(none)"


def register(subparsers) -> dict:
    parser = subparsers.add_parser("report", help="cards issued and clinicians' feedback, "
                                                  "per route and rule")
    parser.add_argument("--since", type=_date, metavar="DATE",
                        help="only cards issued on or after this day (YYYY-MM-DD, UTC)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument("--html", metavar="FILE",
                        help="write a self-contained HTML page with charts to FILE")
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
    if getattr(args, "html", None):
        try:
            Path(args.html).write_text(format_html(data), encoding="utf-8")
        except OSError as exc:
            print(f"cannot write {args.html}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"report written to {args.html}")
    elif args.json:
        print(json.dumps(data, indent=2))
    else:
        print(format_table(data))
    return 0


def _week(day: date | datetime | str) -> str:
    """The Monday of the ISO week holding ``day``, as YYYY-MM-DD."""
    if isinstance(day, str):
        day = date.fromisoformat(day[:10])
    if isinstance(day, datetime):
        day = day.date()
    return (day - timedelta(days=day.weekday())).isoformat()


def build_report(store: Store, since: date | None) -> dict:
    """The report as plain data (the ``--json`` output)."""
    start = datetime.combine(since, time.min) if since else None
    card_filter = issued_card.c.issued_at >= start if start is not None else true()
    group = (issued_card.c.route, issued_card.c.rule_ids)
    rows: dict[tuple[str, str], dict] = {}

    def row(route: str, rule: str) -> dict:
        return rows.setdefault((route, rule), {
            "route": route, "rule": rule, "issued": 0, "accepted": 0, "overridden": 0,
            "override_reasons": [], "suppressed": 0, "acceptance_rate": None, "weekly": {}})

    def week(item: dict, name: str) -> dict:
        return item["weekly"].setdefault(name, {"week": name, "issued": 0, "accepted": 0,
                                                "overridden": 0, "suppressed": 0})

    day = func.date(issued_card.c.issued_at)
    with store.engine.connect() as conn:
        for route, rule, suppressed, on, count in conn.execute(
                select(*group, issued_card.c.suppressed, day, func.count())
                .where(card_filter).group_by(*group, issued_card.c.suppressed, day)):
            name = "suppressed" if suppressed else "issued"
            item = row(route, rule)
            item[name] += count
            week(item, _week(on))[name] += count
        # One outcome per card: the last feedback item (by outcome time, then arrival).
        last: dict[str, tuple] = {}
        for fb in conn.execute(
                select(feedback.c.card_uuid, feedback.c.outcome,
                       feedback.c.override_reason_system, feedback.c.override_reason_code,
                       issued_card.c.route, issued_card.c.rule_ids, issued_card.c.issued_at)
                .select_from(feedback.join(issued_card,
                                           feedback.c.card_uuid == issued_card.c.card_uuid))
                .where(card_filter)
                .order_by(feedback.c.outcome_timestamp, feedback.c.id)):
            last[fb.card_uuid] = fb
        reasons: dict[tuple[str, str], dict[tuple, int]] = {}
        for fb in last.values():
            if fb.outcome not in ("accepted", "overridden"):
                continue
            item = row(fb.route, fb.rule_ids)
            item[fb.outcome] += 1
            week(item, _week(fb.issued_at))[fb.outcome] += 1
            if fb.outcome == "overridden":
                counts = reasons.setdefault((fb.route, fb.rule_ids), {})
                key = (fb.override_reason_system, fb.override_reason_code or NO_REASON)
                counts[key] = counts.get(key, 0) + 1
        for key, counts in reasons.items():
            rows[key]["override_reasons"] = [{"system": system, "code": code, "cards": n}
                                             for (system, code), n in counts.items()]
        unknown_filter = feedback.c.received_at >= start if start is not None else true()
        unknown = conn.execute(
            select(func.count()).select_from(feedback.outerjoin(
                issued_card, feedback.c.card_uuid == issued_card.c.card_uuid))
            .where(and_(issued_card.c.card_uuid.is_(None), unknown_filter))).scalar_one()

    for item in rows.values():
        if item["issued"]:
            item["acceptance_rate"] = round(item["accepted"] / item["issued"], 4)
        item["override_reasons"].sort(key=lambda r: (-r["cards"], r["code"]))
        weekly = [item["weekly"][name] for name in sorted(item["weekly"])]
        for entry in weekly:
            entry["acceptance_rate"] = (round(entry["accepted"] / entry["issued"], 4)
                                        if entry["issued"] else None)
        item["weekly"] = weekly
    ordered = [rows[key] for key in sorted(rows)]
    return {
        "since": since.isoformat() if since else None,
        "generated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "rows": ordered,
        "totals": {name: sum(r[name] for r in ordered)
                   for name in ("issued", "accepted", "overridden", "suppressed")},
        "feedback_for_unknown_cards": unknown,
    }


def format_table(data: dict) -> str:
    header = ("route", "rule", "issued", "accepted", "overridden", "suppressed", "acceptance")
    lines = [tuple(header)]
    for r in data["rows"]:
        rate = "-" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.0%}"
        lines.append((r["route"], r["rule"] or "-", str(r["issued"]), str(r["accepted"]),
                      str(r["overridden"]), str(r["suppressed"]), rate))
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
               f"{totals['overridden']} overridden, {totals['suppressed']} suppressed")
    if data["feedback_for_unknown_cards"]:
        out.append(f"feedback for unknown cards: {data['feedback_for_unknown_cards']}")
    return "\n".join(out)
