"""The same chart with only the form of its instants changed gives the same cards (issue 21).

Every instant (``YYYY-MM-DDThh:mm:ss[.f]zone``) of every example request and every shared
chart is rewritten with an explicit offset, without seconds, without a zone (read in
CDS_LOCAL_TIMEZONE, UTC here) and as a date only; the routes and indicators must not move.
Before the reading layer, 17 of the 20 shared charts lost cards when their times lacked
seconds or a zone.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthea import hook_request, newest_date, synthea_files  # noqa: E402

from cds_service.config import Settings  # noqa: E402
from cds_service.protocol.fhir_json import decode_request  # noqa: E402
from cds_service.service import CdsService  # noqa: E402

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "fhir_examples").glob("*.json"))
EXAMPLES_TODAY = "2026-11-24"
INSTANT = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def rewritten(node: object, form: str) -> object:
    """A copy of ``node`` with every instant written in ``form``."""
    if isinstance(node, dict):
        return {key: rewritten(value, form) for key, value in node.items()}
    if isinstance(node, list):
        return [rewritten(value, form) for value in node]
    if isinstance(node, str) and (match := INSTANT.match(node)):
        day, hour, minute, second, _fraction, zone = match.groups()
        return {
            "offset": datetime.fromisoformat(node.replace("Z", "+00:00"))
            .astimezone(timezone(timedelta(hours=-5)))
            .isoformat(),
            "no seconds": f"{day}T{hour}:{minute}{zone}",
            "no zone": f"{day}T{hour}:{minute}:{second}",
            "no seconds, no zone": f"{day}T{hour}:{minute}",
            "date only": day,
        }[form]
    return node


FORMS = ("offset", "no seconds", "no zone", "no seconds, no zone", "date only")


@cache
def service(today: str) -> CdsService:
    return CdsService(Settings.from_env({}, today=today), fetcher=lambda *a: {})


def answer(request: dict, today: str) -> list[tuple[str, str]]:
    response = service(today).evaluate(decode_request(orjson.dumps(request))).response
    return [(card["source"]["topic"]["code"], card["indicator"]) for card in response["cards"]]


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
