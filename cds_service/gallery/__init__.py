"""``cds-service gallery OUT.html [DIR ...]``: every chart's cards on one page, for review.

The clinical team reviews a rule change at a glance: every example (``fhir_examples/``),
every shared synthetic chart (``--shared-charts``, default ``../shared/fhir-real``; skipped
with a note when absent) and every FHIR bundle or hook request under each DIR given, one
section per chart with its key data beside the cards the service answers, as of today
(CDS_TODAY when set). Nothing is fetched and nothing is recorded: the charts carry all
their data, and no feedback store is opened.

``charts`` builds the requests, ``keydata`` reads what a reviewer checks a card against,
``html`` renders the page (``templates/``); here: the command and the evaluation.
"""

from __future__ import annotations

import re
import sys
from datetime import date
from pathlib import Path

from cds_service import examples
from cds_service.config import Settings
from cds_service.errors import CdsError
from cds_service.gallery.charts import DEFAULT_SHARED_CHARTS, Chart, bundle_charts, example_charts
from cds_service.gallery.html import Section, render
from cds_service.gallery.keydata import key_data
from cds_service.render.explain import rules_hash
from cds_service.service import CdsService

__all__ = ["build", "register", "run"]


def register(subparsers) -> dict:
    parser = subparsers.add_parser(
        "gallery",
        help="write every example's and shared chart's cards to one HTML page for review",
        description="Render the cards a clinician would see for every example, every shared "
        "chart and every FHIR bundle under each DIR, one section per chart with its key "
        "data, as one self-contained HTML file.",
    )
    parser.add_argument("out", metavar="OUT.html", help="the HTML file to write")
    parser.add_argument("dirs", nargs="*", metavar="DIR", help="more directories of bundles")
    parser.add_argument(
        "--shared-charts",
        type=Path,
        default=DEFAULT_SHARED_CHARTS,
        metavar="DIR",
        help=f"the shared synthetic charts (default: {DEFAULT_SHARED_CHARTS}; skipped when absent)",
    )
    return {"gallery": run}


def run(args, settings: Settings) -> int:
    today = date.fromisoformat(settings.today[:10]) if settings.today else examples.today_utc()
    missing = [d for d in args.dirs if not Path(d).is_dir()]
    if missing:
        print(f"not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not args.shared_charts.is_dir():
        print(f"no shared charts at {args.shared_charts}: left out", file=sys.stderr)
    page, count = build(settings, today, args.shared_charts, [Path(d) for d in args.dirs])
    try:
        Path(args.out).write_text(page, encoding="utf-8")
    except OSError as exc:
        print(f"cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"gallery of {count} charts written to {args.out}")
    return 0


def build(settings: Settings, today: date, shared: Path, dirs: list[Path]) -> tuple[str, int]:
    """The page and how many charts it shows."""
    service = CdsService(
        settings.model_copy(update={"today": today.isoformat()}), fetcher=_no_fetching
    )
    ruleset = service.ruleset
    charts = example_charts(today)
    for directory, origin in [(shared, "shared chart"), *((d, str(d)) for d in dirs)]:
        charts += bundle_charts(directory, origin, service.keys, ruleset, today)
    sections = [_section(chart, service, today, i) for i, chart in enumerate(charts)]
    heading = {
        "version": ruleset.source_attributes.get("version", ""),
        "content_hash": rules_hash(settings.cards_dir),
        "today": today.isoformat(),
    }
    return render(sections, heading), len(sections)


def _no_fetching(_server: str, _token: str | None, wanted: dict[str, str]) -> dict[str, str]:
    """The gallery reads only what a chart holds: a query it would need is never run, and a
    chart missing required data says so in its section."""
    return {name: "not fetched by the gallery" for name in wanted}


def _section(chart: Chart, service: CdsService, today: date, index: int) -> Section:
    notes = []
    if chart.moved_days:
        notes.append(f"dates moved {chart.moved_days} days forward to be recent")
    if chart.cramp_added:
        notes.append("leg-cramp problem added today (none on record)")
    anchor = f"chart-{index}-" + re.sub(r"[^a-z0-9]+", "-", chart.title.lower()).strip("-")
    section = Section(anchor, chart.title.replace("_", " "), chart.origin, notes, None, [])
    try:
        section.data = key_data(chart.request, service.ruleset, today)
        section.cards = service.evaluate(chart.request).response["cards"]
    except CdsError as error:  # an invalid request in a directory given: said, not fatal
        section.error = error.message
    return section
