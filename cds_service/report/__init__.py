"""``cds-service report [--since DATE] [--json | --html FILE]``: what clinicians did with
the cards.

One row per route and rules fired: "rule" (labelled "rules fired") is the set of criteria
that fired together for the card (the comma-joined criterion ids recorded with it), so every
card counts in exactly one row:

- issued: cards issued (since DATE, UTC, when given), not counting suppressed ones;
- accepted / overridden: of those cards, how many ended accepted / overridden. One outcome
  per card, the last (by outcomeTimestamp): the CDS Hooks sandbox sends "accepted" for a
  click on a suggestion and then "overridden" for the dismissal, which counts as overridden;
- override reasons: overridden cards per reason (system + code; "(none)" when no reason);
- suppressed: cards rendered but left out because an override suppressed them;
- acceptance rate: accepted / issued, overall and per week (weeks start on Monday, UTC);
  the table and page say "no feedback" where no card has an outcome yet, not 0 %.

Feedback for cards this service has no record of is counted separately (unknown cards).
Free-text comments are never printed, nor anything about a patient.

``data.py`` builds the report from the database; ``text.py`` prints it as a table,
``html.py`` (charts: ``charts.py``) as a page; here: the command and its options.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from cds_service.config import ConfigError, Settings
from cds_service.report.data import build_report
from cds_service.report.html import format_html
from cds_service.report.text import format_table
from cds_service.storage import Store, StoreUnavailable

__all__ = ["build_report", "format_html", "format_table", "register", "run"]


def register(subparsers) -> dict:
    parser = subparsers.add_parser(
        "report", help="cards issued and clinicians' feedback, per route and rules fired"
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
