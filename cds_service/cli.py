"""Command line: ``cds-service serve | evaluate | check-rules | report | example | gallery``.

The parser's description and help are plain text (no markup): they are what a new user
reads first, with ``cds-service --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from datetime import date
from pathlib import Path

from cds_service import examples, gallery, report
from cds_service.config import ConfigError, Settings
from cds_service.engine import RuleError, load_rules
from cds_service.errors import CdsError
from cds_service.web.http_errors import operation_outcome, status_of

WIDTH = 100  # the --explain tables' width


def _serve(args, settings: Settings) -> int:
    from cds_service.web.app import create_app

    app = create_app(settings)
    app.run(host=args.host or settings.host, port=args.port or settings.port)
    return 0


def _evaluate(args, settings: Settings) -> int:
    from cds_service.service import CdsService

    try:
        text = (
            sys.stdin.read()
            if args.request == "-"
            else Path(args.request).read_text(encoding="utf-8")
        )
        payload = json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.request}: {exc}", file=sys.stderr)
        return 2
    service = CdsService(settings)
    store = None if args.no_suppressions else _configured_store(settings)
    if store is not None:
        # As the HTTP path does: cards an override suppresses for this patient (any
        # client's) are left out. Read only: nothing is recorded, so a replay never counts
        # as issued.
        store.suppression_policy = service.suppression_policy
        store.urgent_routes = service.urgent_routes
    try:
        service_id = args.service or _service_for(service, payload)
        outcome = service.call(service_id, payload, store, client=None, record=False)
    except CdsError as error:
        print(json.dumps(operation_outcome(status_of(error), error.message), indent=2))
        return 1
    finally:
        if store is not None:
            store.close()
    for left_out in outcome.suppressed:  # route and rule ids only: no patient data
        route = left_out["card"]["source"]["topic"]["code"]
        print(
            f"suppressed by an earlier override: {route} (rules {left_out['rules']})",
            file=sys.stderr,
        )
    print(json.dumps(outcome.response, indent=2, ensure_ascii=False))
    return 0


def _service_for(service, payload: object) -> str:
    """The service a request file is for: the first declared for its hook."""
    from cds_service.protocol.services import for_hook

    hook = payload.get("hook") if isinstance(payload, dict) else None
    return for_hook(hook, service.services).id


def _configured_store(settings: Settings):
    """The feedback store when one is configured: CDS_DATABASE_URL, or the default SQLite
    database once a service has created it in CDS_DATA_DIR (never created from here)."""
    default = settings.data_dir / "cds.sqlite3"
    if not settings.database_url.get_secret_value() and not default.exists():
        return None
    from cds_service.storage import Store

    return Store(settings)


def _check_rules(args, settings: Settings) -> int:
    cards_dir = Path(args.cards_dir) if args.cards_dir else settings.cards_dir
    ruleset = load_rules(cards_dir)  # a RuleError is reported by main()
    from cds_service.service import suppression_policy

    suppression_policy(ruleset)  # unknown reason codes; urgent routes at most a day
    from cds_service.engine.order_rules import load_orders
    from cds_service.protocol.services import ORDERS, SERVICES

    order_files = dict.fromkeys(s.rule_files for s in SERVICES if s.rules == ORDERS)
    # each order service's files: classes and criteria named, ids once
    orders = [load_orders(cards_dir, ruleset, files) for files in order_files]
    checks = list(dict.fromkeys(check.id for rules in orders for check in rules.checks))
    routes = ", ".join(r.code for r in ruleset.routes)
    if getattr(args, "explain", False):
        from cds_service.render.explain import decision_tables, rules_hash

        print(decision_tables(ruleset, rules_hash(cards_dir)), end="")
        medication_checks = {c.id: c for rules in orders for c in rules.medication_checks}
        print(_named_thresholds(ruleset, list(medication_checks.values())), end="")
    print(f"OK: {len(ruleset.routes)} route files in {cards_dir} ({routes})")
    if checks:
        print(f"OK: {len(checks)} order checks ({', '.join(checks)})")
    return 0


def _named_thresholds(ruleset, medication_checks: list) -> str:
    """Each named threshold (cards/shared/ ``thresholds:``) once, with every rule that
    compares a result with it and the order checks that read those rules (issue 21)."""
    from cds_service.render.explain import threshold_words

    if not ruleset.thresholds:
        return ""
    lines = ["=" * WIDTH, "Named thresholds (cards/shared/): each defined once", "=" * WIDTH]
    for name, rules in _users(ruleset).items():
        named = ruleset.thresholds[name]
        text = f"{named.concept.label} {threshold_words(named.threshold, named.concept)}"
        ages = {"from": "aged {:g} or over", "below": "under {:g}"}
        text += "".join(f"; {ages[k].format(v)}" for k, v in named.ages.items())
        if named.critical_flags:
            text += f"; or flagged {'/'.join(named.critical_flags)} with no readable number"
        lines += _wrapped(f"  {name}: ", f"{text} [{named.where.split(':')[0]}]")
        used = [f"{route.code}: {c.id}{_window(c)}" for route, c in rules]
        lines += _wrapped("      used by ", ", ".join(used) or "no rule")
        ids = {c.id for _route, c in rules}
        reading = [check.id for check in medication_checks if ids & set(check.when_any)]
        if reading:
            lines += _wrapped("      order checks ", ", ".join(reading))
    return "\n".join([*lines, ""]) + "\n"


def _users(ruleset) -> dict[str, list]:
    """Each named threshold with every rule (route, criterion) that compares against it."""
    found: dict[str, list] = {name: [] for name in ruleset.thresholds}
    for route in ruleset.routes:
        for criterion in route.criteria.values():
            name = getattr(criterion, "threshold_name", None)
            if name is not None:
                found[name].append((route, criterion))
    return found


def _window(criterion) -> str:
    """' (30 days)', ' (365 days, sustained 90 days)': what the rule asks of the cut-off."""
    parts = [f"{criterion.window.days} days"] if criterion.window else []
    if getattr(criterion, "sustained", None):
        parts.append(f"sustained {criterion.sustained.days} days")
    return f" ({', '.join(parts)})" if parts else ""


def _wrapped(prefix: str, text: str) -> list[str]:
    # Never at a hyphen: rule ids stay whole, for grep (as the decision tables do).
    return textwrap.wrap(
        text, WIDTH, initial_indent=prefix, subsequent_indent=" " * 14, break_on_hyphens=False
    )


def _example(args, settings: Settings) -> int:
    if args.list:
        print("\n".join(examples.names()))
        return 0
    if not args.name:
        print("name an example (cds-service example --list shows them)", file=sys.stderr)
        return 2
    today = args.today or (
        date.fromisoformat(settings.today[:10]) if settings.today else examples.today_utc()
    )
    try:
        sys.stdout.write(examples.render(args.name, today))
    except examples.UnknownExample as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def _iso_date(raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {raw!r}") from None


DESCRIPTION = "Leg-cramp referral CDS services (CDS Hooks patient-view, order-select, order-sign)."
EPILOG = """examples:
  cds-service example --list
  cds-service example nephrology-ckd-stage-4 | cds-service evaluate -
  cds-service check-rules --explain
  cds-service report --since 2026-11-01
  cds-service gallery gallery.html

Settings come from CDS_* environment variables (see the README)."""


def _evaluate_parser(sub) -> None:
    """``evaluate``: any declared service's request, the service chosen by its hook."""
    evaluate = sub.add_parser(
        "evaluate", help="print the CDS Hooks response for a hook request file (- for stdin)"
    )
    evaluate.add_argument("request", help="a hook request JSON file, or - to read stdin")
    evaluate.add_argument(
        "--service",
        metavar="ID",
        help="the CDS service to call (default: the first one answering the request's hook; "
        "see GET /cds-services)",
    )
    evaluate.add_argument(
        "--no-suppressions",
        action="store_true",
        help="show every card, also those an override suppresses for this patient",
    )


def _parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="cds-service",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve", help="run the Flask development server (make run starts gunicorn)"
    )
    serve.add_argument("--host", help="listen address (default: CDS_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: CDS_PORT, 8080)")
    _evaluate_parser(sub)
    check = sub.add_parser("check-rules", help="validate every file in cards/")
    check.add_argument("--cards-dir")
    check.add_argument(
        "--explain",
        action="store_true",
        help="also print each route as a plain-language decision table "
        "(the same content as the /explain pages)",
    )
    extra = report.register(sub)
    extra |= gallery.register(sub)
    example = sub.add_parser(
        "example",
        help="print an example hook request with its dates moved to today",
        description="Print one of the example hook requests (fhir_examples/) with every "
        f"date moved so it is as recent today as it was on {examples.AUTHORED}, the day "
        "it was written.",
    )
    example.add_argument("name", nargs="?", help="the example's name (see --list)")
    example.add_argument("--list", action="store_true", help="list the examples' names")
    example.add_argument(
        "--today",
        type=_iso_date,
        metavar="DATE",
        help="move the dates relative to this day instead (YYYY-MM-DD; default: CDS_TODAY, "
        f"else today, UTC); --today {examples.AUTHORED} prints the file as it is",
    )
    handlers = {
        "serve": _serve,
        "evaluate": _evaluate,
        "check-rules": _check_rules,
        "example": _example,
        **extra,
    }
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    parser, handlers = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return handlers[args.command](args, settings)
    except RuleError as exc:
        print(f"cards/ error: {exc}", file=sys.stderr)
        return 1
