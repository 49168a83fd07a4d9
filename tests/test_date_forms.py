"""The same chart with only the form of its instants changed gives the same cards (issue 21).

Every instant (``YYYY-MM-DDThh:mm:ss[.f]zone``) of every example request and every shared
chart is rewritten with an explicit offset, without seconds, without a zone (read in
CDS_LOCAL_TIMEZONE, UTC here) and as a date only; the routes and indicators must not move.
Before the reading layer, 17 of the 20 shared charts lost cards when their times lacked
seconds or a zone. The tests' vignettes, written with dates only, are sent again with each
date as an instant of its day in every form (below)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routes_helpers import TODAY  # noqa: E402
from synthea import hook_request, newest_date, synthea_files  # noqa: E402
from vignettes import VIGNETTES  # noqa: E402

from cds_service.config import Settings  # noqa: E402
from cds_service.protocol.fhir_json import decode_request  # noqa: E402
from cds_service.service import CdsService  # noqa: E402

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "fhir_examples").glob("*.json"))
EXAMPLES_TODAY = "2026-11-24"
INSTANT = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def mapped(node: object, change: Callable[[str, str], str], key: str = "") -> object:
    """A copy of ``node`` with ``change(element name, text)`` applied to every string."""
    if isinstance(node, dict):
        return {name: mapped(value, change, name) for name, value in node.items()}
    if isinstance(node, list):
        return [mapped(value, change, key) for value in node]
    return change(key, node) if isinstance(node, str) else node


def rewritten(node: object, form: str) -> object:
    """A copy of ``node`` with every instant written in ``form``."""
    return mapped(node, lambda _key, text: _written(text, form))


def _written(text: str, form: str) -> str:
    match = INSTANT.match(text)
    if match is None:
        return text
    day, hour, minute, second, _fraction, zone = match.groups()
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return {
        "Z": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "+00:00": at.astimezone(UTC).isoformat(),
        "offset": at.astimezone(timezone(timedelta(hours=-5))).isoformat(),
        "no seconds": f"{day}T{hour}:{minute}{zone}",
        "no zone": f"{day}T{hour}:{minute}:{second}",
        "no seconds, no zone": f"{day}T{hour}:{minute}",
        "date only": day,
    }[form]


FORMS = ("offset", "no seconds", "no zone", "no seconds, no zone", "date only")


@cache
def service(today: str) -> CdsService:
    return CdsService(Settings.from_env({}, today=today), fetcher=lambda *a: {})


def answer(request: dict, today: str, *, evidence: bool = False) -> object:
    """The cards' routes and indicators; with ``evidence``, also the rules that fired and
    the UTC day of each fact behind a card (a date read hours off moves its day)."""
    done = service(today).evaluate(decode_request(orjson.dumps(request)))
    cards = [
        (card["source"]["topic"]["code"], card["indicator"]) for card in done.response["cards"]
    ]
    if not evidence:
        return cards
    days = {
        (fact.criterion, fact.when.astimezone(UTC).date().isoformat())
        for result in done.results
        for fact in (*result.facts, *result.context)
        if fact.when is not None
    }
    return cards, done.rule_ids, sorted(days)


def charts() -> list[tuple[str, dict, str]]:
    found = [(p.name, json.loads(p.read_text()), EXAMPLES_TODAY) for p in EXAMPLES]
    for path in synthea_files():
        today = newest_date(path)
        found.append((path.name, hook_request(path, cramp_onset=today), today))
    return found


CHARTS = charts()


@pytest.mark.parametrize("name, request_, today", CHARTS, ids=[c[0] for c in CHARTS])
def test_the_form_of_the_instants_never_changes_the_cards(name, request_, today):
    expected = answer(request_, today)
    for form in FORMS:
        assert answer(rewritten(request_, form), today) == expected, form


def test_the_rewriting_reaches_the_instants_it_is_about():
    """Not a test that cannot fail: the charts hold instants, and every form changes them."""
    name, request_, _today = next(c for c in CHARTS if c[0].startswith("Gabriel"))
    text = json.dumps(request_)
    assert re.search(r'"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}', text)
    for form in FORMS:
        changed = json.dumps(rewritten(request_, form))
        assert changed != text, form


# The tests' vignettes (tests/vignettes.py, the corpus of issue 22) are written with dates
# only: each is re-sent with every date (not ``birthDate``, a FHIR ``date``) written as an
# instant of the same day in each form. Noon UTC (07:00 at -05:00) keeps every form on the
# same UTC and local day. The look-back windows count days (``lookback_days``; the 72-hour
# fever and D-dimer windows are ``lookback_days: 3``) back from CDS_TODAY's midnight: a
# result is in when it is at or after the window's start, a problem when any of its day is,
# so a time within the day leaves each date on the same side. Two checks are not like that,
# and no vignette sits on them: ``persisting_days`` (a problem dated exactly 180 days back
# persists as a day, not yet at noon of that day), and a procedure later than CDS_TODAY's
# midnight (noon today) is after "now". The rules that fired and each fact's UTC day are
# compared too: a time read hours off (a wrong zone) moves a day before it moves a route.
VIGNETTE_FORMS = ("Z", "+00:00", "offset", "no seconds", "no zone", "no seconds, no zone")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def at_noon(node: object) -> object:
    """A copy of ``node`` with every date but the birth date written as noon UTC that day."""
    return mapped(
        node,
        lambda key, text: f"{text}T12:00:00Z" if key != "birthDate" and DAY.match(text) else text,
    )


@pytest.mark.parametrize("name, build", VIGNETTES, ids=[v[0] for v in VIGNETTES])
def test_a_vignettes_days_written_as_instants_in_any_form_give_the_same_cards(name, build):
    request_ = build()
    today = TODAY.isoformat()
    expected = answer(request_, today, evidence=True)
    timed = at_noon(request_)
    changed = {
        form: got
        for form in VIGNETTE_FORMS
        if (got := answer(rewritten(timed, form), today, evidence=True)) != expected
    }
    assert not changed, (expected, changed)


def test_the_vignette_rewriting_reaches_every_date_but_the_birth_date():
    """Not a test that cannot fail: every vignette's dates become instants, in six forms."""
    assert len(VIGNETTES) > 100
    for name, build in VIGNETTES:
        request_ = build()
        timed = at_noon(request_)
        dates = re.findall(r'"(\w+)": "\d{4}-\d{2}-\d{2}"', json.dumps(timed))
        assert dates == ["birthDate"], name
        assert len(re.findall(r'T12:00:00Z"', json.dumps(timed))) > 1, name
        texts = {json.dumps(rewritten(timed, form)) for form in VIGNETTE_FORMS}
        assert len(texts) == len(VIGNETTE_FORMS) and json.dumps(request_) not in texts, name
