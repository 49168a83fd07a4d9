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
from html import escape
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select, true

from cds_service.config import ConfigError, Settings
from cds_service.database import StoreUnavailable, feedback, issued_card
from cds_service.storage import Store

NO_REASON = "(none)"


def register(subparsers) -> dict:
    parser = subparsers.add_parser(
        "report", help="cards issued and clinicians' feedback, per route and rule"
    )
    parser.add_argument(
        "--since",
        type=_date,
        metavar="DATE",
        help="only cards issued on or after this day (YYYY-MM-DD, UTC)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument(
        "--html", metavar="FILE", help="write a self-contained HTML page with charts to FILE"
    )
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

    def week(item: dict, name: str) -> dict:
        return item["weekly"].setdefault(
            name, {"week": name, "issued": 0, "accepted": 0, "overridden": 0, "suppressed": 0}
        )

    day = func.date(issued_card.c.issued_at)
    with store.engine.connect() as conn:
        for route, rule, suppressed, on, count in conn.execute(
            select(*group, issued_card.c.suppressed, day, func.count())
            .where(card_filter)
            .group_by(*group, issued_card.c.suppressed, day)
        ):
            name = "suppressed" if suppressed else "issued"
            item = row(route, rule)
            item[name] += count
            week(item, _week(on))[name] += count
        # One outcome per card: the last feedback item (by outcome time, then arrival).
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
            .select_from(
                feedback.join(issued_card, feedback.c.card_uuid == issued_card.c.card_uuid)
            )
            .where(card_filter)
            .order_by(feedback.c.outcome_timestamp, feedback.c.id)
        ):
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
            rows[key]["override_reasons"] = [
                {"system": system, "code": code, "cards": n} for (system, code), n in counts.items()
            ]
        unknown_filter = feedback.c.received_at >= start if start is not None else true()
        unknown = conn.execute(
            select(func.count())
            .select_from(
                feedback.outerjoin(issued_card, feedback.c.card_uuid == issued_card.c.card_uuid)
            )
            .where(and_(issued_card.c.card_uuid.is_(None), unknown_filter))
        ).scalar_one()

    for item in rows.values():
        if item["issued"]:
            item["acceptance_rate"] = round(item["accepted"] / item["issued"], 4)
        item["override_reasons"].sort(key=lambda r: (-r["cards"], r["code"]))
        weekly = [item["weekly"][name] for name in sorted(item["weekly"])]
        for entry in weekly:
            entry["acceptance_rate"] = (
                round(entry["accepted"] / entry["issued"], 4) if entry["issued"] else None
            )
        item["weekly"] = weekly
    ordered = [rows[key] for key in sorted(rows)]
    return {
        "since": since.isoformat() if since else None,
        "generated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "rows": ordered,
        "totals": {
            name: sum(r[name] for r in ordered)
            for name in ("issued", "accepted", "overridden", "suppressed")
        },
        "feedback_for_unknown_cards": unknown,
    }


def format_table(data: dict) -> str:
    header = ("route", "rule", "issued", "accepted", "overridden", "suppressed", "acceptance")
    lines = [tuple(header)]
    for r in data["rows"]:
        rate = "-" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.0%}"
        lines.append(
            (
                r["route"],
                r["rule"] or "-",
                str(r["issued"]),
                str(r["accepted"]),
                str(r["overridden"]),
                str(r["suppressed"]),
                rate,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    title = "Cards and feedback" + (f" since {data['since']}" if data["since"] else "")
    out.append(title)
    for index, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=False))
            ).rstrip()
        )
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
        else:
            for reason in data["rows"][index - 1]["override_reasons"]:
                out.append(
                    f"    overridden: {reason['code']} ({reason['system'] or 'no system'})"
                    f": {reason['cards']}"
                )
    if not data["rows"]:
        out.append("(no cards issued)")
    totals = data["totals"]
    out.append(
        f"total: {totals['issued']} issued, {totals['accepted']} accepted, "
        f"{totals['overridden']} overridden, {totals['suppressed']} suppressed"
    )
    if data["feedback_for_unknown_cards"]:
        out.append(f"feedback for unknown cards: {data['feedback_for_unknown_cards']}")
    return "\n".join(out)


# -- HTML ---------------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;color:#1b1b1b}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem;border-top:1px solid #ccc;padding-top:1rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.9rem}
th,td{border-bottom:1px solid #ddd;padding:.25rem .4rem;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left;min-width:11rem;overflow-wrap:anywhere}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.charts figure{margin:0;flex:1 1 16rem;min-width:0}
figcaption{font-size:.85rem;color:#444}svg{width:100%;height:auto}
.issued{fill:#9db7d5}.accepted{fill:#2f7d32}.reason{fill:#c75c1d}
.key span{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 .8em}
.key .issued{background:#9db7d5}.key .accepted{background:#2f7d32}
.muted{color:#555;font-size:.85rem}.scroll{overflow-x:auto;max-width:100%}
"""


def _route_summary(rows: list[dict]) -> dict:
    """The rows of one route added up: totals, weeks and override reasons."""
    weeks: dict[str, dict] = {}
    reasons: dict[str, int] = {}
    total = {"issued": 0, "accepted": 0, "overridden": 0, "suppressed": 0}
    for r in rows:
        for name in total:
            total[name] += r[name]
        for w in r["weekly"]:
            entry = weeks.setdefault(w["week"], {"issued": 0, "accepted": 0})
            entry["issued"] += w["issued"]
            entry["accepted"] += w["accepted"]
        for reason in r["override_reasons"]:
            reasons[reason["code"]] = reasons.get(reason["code"], 0) + reason["cards"]
    return {
        "total": total,
        "weeks": sorted(weeks.items()),
        "reasons": sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])),
    }


def _weekly_svg(weeks: list[tuple[str, dict]], title: str) -> str:
    """Grouped bars per week: issued (light) and accepted (dark)."""
    width, height, left, bottom = 420, 200, 34, 36
    if not weeks:
        return '<p class="muted">No cards in this period.</p>'
    top = max(max(w["issued"], w["accepted"]) for _, w in weeks) or 1
    slot = (width - left - 6) / len(weeks)
    bar = max(min(slot * 0.38, 28), 1.5)
    scale = (height - bottom - 10) / top
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
        'stroke="#888"/>',
        f'<text x="{left - 4}" y="14" font-size="11" text-anchor="end">{top}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" font-size="11" text-anchor="end">0</text>',
    ]
    label_every = max(1, len(weeks) // 8)
    for i, (week, w) in enumerate(weeks):
        x = left + i * slot + slot / 2
        for offset, name in ((-bar, "issued"), (0.0, "accepted")):
            h = w[name] * scale
            parts.append(
                f'<rect class="{name}" x="{x + offset:.1f}" '
                f'y="{height - bottom - h:.1f}" width="{bar:.1f}" height="{h:.1f}">'
                f"<title>week of {week}: {w[name]} {name}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{height - bottom + 14}" font-size="10" '
                f'text-anchor="middle">{week[5:]}</text>'
            )
    parts.append(
        f'<text x="{left}" y="{height - 4}" font-size="10">week starting (MM-DD), UTC</text></svg>'
    )
    return "".join(parts)


def _reasons_svg(reasons: list[tuple[str, int]], title: str) -> str:
    """Horizontal bars: overridden cards per reason."""
    if not reasons:
        return '<p class="muted">No overrides.</p>'
    row_h, label_w, width = 24, 190, 420
    height = row_h * len(reasons) + 8
    top = max(n for _, n in reasons) or 1
    scale = (width - label_w - 40) / top
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (code, n) in enumerate(reasons):
        y = 4 + i * row_h
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" font-size="11" '
            f'text-anchor="end">{escape(code[:32])}</text>'
        )
        parts.append(
            f'<rect class="reason" x="{label_w}" y="{y + 3}" '
            f'width="{max(n * scale, 1):.1f}" height="{row_h - 8}">'
            f"<title>{escape(code)}: {n}</title></rect>"
        )
        parts.append(
            f'<text x="{label_w + n * scale + 4:.1f}" y="{y + 15}" font-size="11">{n}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def format_html(data: dict) -> str:
    """A self-contained page (inline CSS and SVG, no scripts, no external resources): per
    route, issued and accepted cards per week and the override reasons, then the table per
    rule. Counts only: nothing about a patient, no free-text comments."""
    by_route: dict[str, list[dict]] = {}
    for r in data["rows"]:
        by_route.setdefault(r["route"], []).append(r)
    totals = data["totals"]
    since = f" since {data['since']}" if data["since"] else ""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Leg-cramp CDS: cards and feedback{escape(since)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Cards and feedback{escape(since)}</h1>",
        f'<p class="muted">Generated {escape(data["generated_at"])}. One outcome per card '
        "(the last feedback). Suppressed: cards left out because an override suppressed "
        "them for that patient. No patient data is shown.</p>",
        "<p>",
        f"{totals['issued']} issued, {totals['accepted']} accepted, "
        f"{totals['overridden']} overridden, {totals['suppressed']} suppressed",
        (
            f"; feedback for unknown cards: {data['feedback_for_unknown_cards']}"
            if data["feedback_for_unknown_cards"]
            else ""
        ),
        "</p>",
    ]
    if not by_route:
        out.append("<p>(no cards issued)</p>")
    for route, rows in by_route.items():
        summary = _route_summary(rows)
        t = summary["total"]
        rate = t["accepted"] / t["issued"] if t["issued"] else None
        out.append(f'<section id="route-{escape(route)}"><h2>{escape(route)}</h2>')
        out.append(
            f"<p>{t['issued']} issued, {t['accepted']} accepted ({_rate(rate)}), "
            f"{t['overridden']} overridden, {t['suppressed']} suppressed</p>"
        )
        out.append(
            '<div class="charts"><figure>'
            + _weekly_svg(summary["weeks"], f"{route}: issued and accepted per week")
            + '<figcaption class="key">Per week:<span class="issued"></span>issued'
            '<span class="accepted"></span>accepted</figcaption></figure><figure>'
            + _reasons_svg(summary["reasons"], f"{route}: override reasons")
            + "<figcaption>Override reasons (cards)</figcaption></figure></div>"
        )
        out.append(
            '<div class="scroll"><table><thead><tr><th>rule (criteria that fired)</th>'
            "<th>issued</th>"
            "<th>accepted</th><th>overridden</th><th>suppressed</th><th>acceptance</th>"
            "</tr></thead><tbody>"
        )
        for r in rows:
            reasons = "".join(
                f'<br><span class="muted">{escape(x["code"])}: {x["cards"]}</span>'
                for x in r["override_reasons"]
            )
            weekly = ", ".join(f"{w['week']}: {_rate(w['acceptance_rate'])}" for w in r["weekly"])
            out.append(
                f"<tr><td>{escape(r['rule'] or '-')}"
                + (
                    f'<br><span class="muted">acceptance per week: {escape(weekly)}</span>'
                    if weekly
                    else ""
                )
                + f"</td><td>{r['issued']}</td><td>{r['accepted']}</td>"
                f"<td>{r['overridden']}{reasons}</td><td>{r['suppressed']}</td>"
                f"<td>{_rate(r['acceptance_rate'])}</td></tr>"
            )
        out.append("</tbody></table></div></section>")
    out.append("</body></html>")
    return "\n".join(out)
