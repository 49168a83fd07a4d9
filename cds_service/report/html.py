"""The report as one self-contained HTML page (``--html FILE`` and ``GET /admin/report``)."""

from __future__ import annotations

from html import escape

from cds_service.report.charts import reasons_svg, weekly_svg
from cds_service.report.text import NO_FEEDBACK, has_feedback

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


def _rate(value: float | None, counts: dict) -> str:
    """The acceptance rate, or "no feedback" while no card counted has an outcome."""
    if not has_feedback(counts):
        return NO_FEEDBACK
    return "-" if value is None else f"{value:.0%}"


def format_html(data: dict) -> str:
    """A self-contained page (inline CSS and SVG, no scripts, no external resources): per
    route, issued and accepted cards per week and the override reasons, then the table per
    rule. Counts only: nothing about a patient, no free-text comments."""
    by_route: dict[str, list[dict]] = {}
    for r in data["rows"]:
        by_route.setdefault(r["route"], []).append(r)
    out = _head(data)
    if not by_route:
        out.append("<p>(no cards issued)</p>")
    for route, rows in by_route.items():
        out.extend(_route_section(route, rows))
    out.append("</body></html>")
    return "\n".join(out)


def _head(data: dict) -> list[str]:
    """The page up to the first route: title, note and totals."""
    totals = data["totals"]
    since = f" since {data['since']}" if data["since"] else ""
    return [
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
        *(
            ["<p><strong>No feedback yet</strong>: no card has been accepted or overridden.</p>"]
            if data["rows"] and not has_feedback(totals)
            else []
        ),
    ]


def _route_section(route: str, rows: list[dict]) -> list[str]:
    """One route: its totals, the two charts, and the table of its rules."""
    summary = _route_summary(rows)
    t = summary["total"]
    rate = t["accepted"] / t["issued"] if t["issued"] else None
    out = [
        f'<section id="route-{escape(route)}"><h2>{escape(route)}</h2>',
        f"<p>{t['issued']} issued, {t['accepted']} accepted ({_rate(rate, t)}), "
        f"{t['overridden']} overridden, {t['suppressed']} suppressed</p>",
        # Each caption above its chart: it titles what follows, also "No overrides.".
        '<div class="charts"><figure>'
        '<figcaption class="key">Per week:<span class="issued"></span>issued'
        '<span class="accepted"></span>accepted</figcaption>'
        + weekly_svg(summary["weeks"], f"{route}: issued and accepted per week")
        + "</figure><figure><figcaption>Override reasons (cards)</figcaption>"
        + reasons_svg(summary["reasons"], f"{route}: override reasons")
        + "</figure></div>",
        # One row per combination of rules that fired together for a card.
        '<div class="scroll"><table><thead><tr><th>rules fired</th>'
        "<th>issued</th>"
        "<th>accepted</th><th>overridden</th><th>suppressed</th><th>acceptance</th>"
        "</tr></thead><tbody>",
    ]
    out.extend(_rule_row(r) for r in rows)
    out.append("</tbody></table></div></section>")
    return out


def _rule_row(r: dict) -> str:
    reasons = "".join(
        f'<br><span class="muted">{escape(x["code"])}: {x["cards"]}</span>'
        for x in r["override_reasons"]
    )
    weekly = ", ".join(
        f"{w['week']}: {_rate(w['acceptance_rate'], w)}" for w in r["weekly"] if has_feedback(w)
    )
    return (
        f"<tr><td>{escape(r['rule'] or '-')}"
        + (
            f'<br><span class="muted">acceptance per week: {escape(weekly)}</span>'
            if weekly
            else ""
        )
        + f"</td><td>{r['issued']}</td><td>{r['accepted']}</td>"
        f"<td>{r['overridden']}{reasons}</td><td>{r['suppressed']}</td>"
        f"<td>{_rate(r['acceptance_rate'], r)}</td></tr>"
    )
