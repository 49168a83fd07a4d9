"""Every patient the Done-when checks of issue 22 run over, rendered once per session.

- the example hook requests (``fhir_examples/``, on the day they were written),
- every shared chart (../shared/fhir-real), read a week after its newest entry with a leg
  cramp problem recorded that day (as ``test_real_data.shifted_outcome``),
- the test vignettes of ``tests/vignettes.py``, and any response rendered while a
  ``recording()`` is open (other test files may add theirs).

Each ``Rendered`` keeps the route results (what each card's next steps are made of, after
the one plan per patient) beside the cards, so a check can read both the data (a step's
tests and drug classes) and the words a clinician sees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import Any

import orjson
from synthea import SYNTHEA_DIR, hook_request, newest_date, synthea_files
from vignettes import VIGNETTES

from cds_service import examples
from cds_service.config import Settings
from cds_service.engine.facts import RouteResult
from cds_service.protocol.fhir_json import decode_request
from cds_service.render import cards
from cds_service.service import CdsService


@dataclass
class Rendered:
    """One patient's answer: its route results (after the plan) and its cards."""

    label: str
    today: date
    results: list[RouteResult]
    cards: list[dict[str, Any]]


@contextlib.contextmanager
def recording() -> Iterator[list[tuple[list[RouteResult], list[dict[str, Any]]]]]:
    """Every (results, cards) ``cards.render`` makes while open."""
    seen: list[tuple[list[RouteResult], list[dict[str, Any]]]] = []
    original = cards.render

    def render(results, ruleset, patient_id, settings=None):  # type: ignore[no-untyped-def]
        made = original(results, ruleset, patient_id, settings)
        seen.append((results, made))
        return made

    cards.render = render  # type: ignore[assignment]
    try:
        yield seen
    finally:
        cards.render = original  # type: ignore[assignment]


@cache
def _service(today: str) -> CdsService:
    return CdsService(Settings.from_env({}, today=today), fetcher=lambda *a: {})


def render_request(label: str, request: dict, today: date) -> Rendered:
    with recording() as seen:
        _service(today.isoformat()).evaluate(decode_request(orjson.dumps(request)))
    [(results, made)] = seen or [([], [])]
    return Rendered(label, today, results, made)


def example_patients() -> list[Rendered]:
    today = examples.AUTHORED
    return [
        render_request(f"example {name}", examples.request(name, today), today)
        for name in examples.names()
    ]


def shared_patients() -> list[Rendered]:
    """The shared charts, each read a week after its newest entry."""
    found = []
    for path in synthea_files():
        today = date.fromisoformat(newest_date(SYNTHEA_DIR / path.name)) + timedelta(days=7)
        request = hook_request(SYNTHEA_DIR / path.name, cramp_onset=today.isoformat())
        found.append(render_request(f"shared {path.stem}", request, today))
    return found


def vignette_patients() -> list[Rendered]:
    today = date(2026, 11, 24)
    return [render_request(f"vignette {name}", build(), today) for name, build in VIGNETTES]


@cache
def everyone() -> tuple[Rendered, ...]:
    """Examples, shared charts and vignettes: rendered once per test session."""
    return tuple(example_patients() + shared_patients() + vignette_patients())
