"""The report as a plain-text table (the command line's default output)."""

from __future__ import annotations

NO_FEEDBACK = "no feedback"


def has_feedback(counts: dict) -> bool:
    """Whether any card counted here has an outcome: without one an acceptance rate of 0 %
    would read as "always dismissed" when nobody has said anything yet."""
    return bool(counts["accepted"] or counts["overridden"])


def format_table(data: dict) -> str:
    header = (
        "route",
        "rules fired",
        "issued",
        "accepted",
        "overridden",
        "suppressed",
        "acceptance",
    )
    lines = [tuple(header)]
    for r in data["rows"]:
        if not has_feedback(r):
            rate = NO_FEEDBACK
        else:
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
    elif data["rows"] and not has_feedback(totals):
        out.append("no feedback yet: no card has been accepted or overridden")
    return "\n".join(out)
