"""The example hook requests never go stale (issue 24): ``cds-service example NAME`` moves
every FHIR date so the example is as recent today as when it was written, and reproduces
the files in ``fhir_examples/`` byte for byte on the day they were written."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from conftest import TODAY

from cds_service import examples
from cds_service.cli import main
from cds_service.config import Settings
from cds_service.examples import AUTHORED, Shift
from cds_service.service import CdsService

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "fhir_examples").glob("*.json"))
ISO_DAY = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
LATER = [date(2026, 12, 31), date(2028, 2, 29), date(2031, 7, 1), examples.today_utc()]


def test_the_tests_replay_the_examples_on_the_day_they_were_written():
    assert date.fromisoformat(TODAY) == AUTHORED


def test_names_are_the_files():
    assert examples.names() == [path.stem for path in FILES]
    assert len(FILES) >= 10


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_the_file_is_the_command_on_the_authored_day(path, capsys):
    """One source: the static file is what the command prints for the day it was written."""
    assert main(["example", path.stem, "--today", AUTHORED.isoformat()]) == 0
    assert capsys.readouterr().out.encode() == path.read_bytes()


def test_cds_today_is_the_default_day(capsys, monkeypatch):
    monkeypatch.setenv("CDS_TODAY", AUTHORED.isoformat())
    path = ROOT / "fhir_examples" / "urgent-care-dvt.json"
    assert main(["example", "urgent-care-dvt"]) == 0
    assert capsys.readouterr().out == path.read_text()


def test_list_and_unknown_names(capsys):
    assert main(["example", "--list"]) == 0
    assert capsys.readouterr().out.split() == examples.names()
    assert main(["example", "no-such-example"]) == 2
    err = capsys.readouterr().err
    assert "no-such-example" in err and "urgent-care-dvt" in err
    assert main(["example"]) == 2
    assert "--list" in capsys.readouterr().err


def test_every_date_element_moves_and_nothing_else(capsys):
    assert main(["example", "nephrology-ckd-stage-4", "--today", "2026-12-04"]) == 0
    moved = json.loads(capsys.readouterr().out)
    original = json.loads((ROOT / "fhir_examples" / "nephrology-ckd-stage-4.json").read_text())
    changed: list[tuple[str, str, str]] = []

    def compare(a, b, name=""):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for key in a:
                compare(a[key], b[key], key)
        elif isinstance(a, list):
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                compare(x, y, name)
        elif a != b:
            changed.append((name, a, b))

    compare(original, moved)
    assert changed, "no date moved"
    for name, before, after in changed:
        assert examples.is_date_element(name), name
        assert date.fromisoformat(after[:10]) - date.fromisoformat(before[:10]) == timedelta(10)
    names = {name for name, _, _ in changed}
    assert {"birthDate", "effectiveDateTime", "onsetDateTime"} <= names
    # Ids and URLs that merely contain a date are identifiers: never moved.
    assert "egfr-2026-11-13" in json.dumps(moved)


@pytest.mark.parametrize(
    "value, today, expected",
    [
        ("2026-11-13", date(2026, 11, 30), "2026-11-19"),
        ("2026-11-13T08:30:00+05:30", date(2026, 12, 4), "2026-11-23T08:30:00+05:30"),
        ("2026-11-13T23:59:59.123Z", date(2027, 11, 24), "2027-11-13T23:59:59.123Z"),
        ("2024-02-29", date(2027, 11, 24), "2025-02-28"),  # days, not calendar arithmetic
        ("2026-11-13T08:30", date(2026, 11, 25), "2026-11-14T08:30"),  # no seconds, no zone
        ("2026-11-13T08:30:00+0100", date(2026, 11, 25), "2026-11-14T08:30:00+0100"),
        ("2026-11", date(2027, 2, 1), "2027-02"),  # month precision: calendar months
        ("2026-01", date(2027, 1, 1), "2026-03"),
        ("2026", date(2029, 1, 1), "2029"),  # year precision: calendar years
        ("2026-11-13", date(2026, 11, 1), "2026-10-21"),  # an earlier today moves back
        ("egfr-2026-11-13", date(2030, 1, 1), "egfr-2026-11-13"),  # not a date
        ("2026-13-01", date(2030, 1, 1), "2026-13-01"),  # not a real date: as written
    ],
)
def test_values_keep_their_precision_time_and_offset(value, today, expected):
    assert Shift.between(AUTHORED, today).value(value) == expected


def test_only_date_elements_move():
    shift = Shift.between(AUTHORED, AUTHORED + timedelta(days=3))
    tree = {
        "valueString": "2026-11-13",
        "valueDateTime": "2026-11-13",
        "effectivePeriod": {"start": "2026-11-01", "end": "2026-11-02"},
        "meta": {"lastUpdated": "2026-11-13T10:00:00Z"},
        "variant": [{"start": 2026, "end": 2027}],  # MolecularSequence: integers
        "timing": {"event": ["2026-11-10", "2026-11-11"]},
    }
    assert shift.resource(tree) == {
        "valueString": "2026-11-13",
        "valueDateTime": "2026-11-16",
        "effectivePeriod": {"start": "2026-11-04", "end": "2026-11-05"},
        "meta": {"lastUpdated": "2026-11-16T10:00:00Z"},
        "variant": [{"start": 2026, "end": 2027}],
        "timing": {"event": ["2026-11-13", "2026-11-14"]},
    }


def _cards(request: dict, today: date, data_dir: Path) -> list[tuple[str, str, str]]:
    settings = Settings.from_env({}, today=today.isoformat(), data_dir=data_dir)
    response = CdsService(settings).evaluate(request).response
    return [(c["source"]["topic"]["code"], c["indicator"], c["summary"]) for c in response["cards"]]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_an_example_moved_to_any_day_gives_the_same_cards(path, tmp_path):
    """The point of moving dates: on a later day (or today) the moved example answers the
    same cards as the file did when written, its dates moved by as many days."""
    written = _cards(json.loads(path.read_text()), AUTHORED, tmp_path)
    assert written, f"{path.name} gives no card on the day it was written"
    for today in LATER:
        days = (today - AUTHORED).days

        def moved_day(match: re.Match, days: int = days) -> str:
            return (date.fromisoformat(match.group()) + timedelta(days)).isoformat()

        expected = [(r, i, ISO_DAY.sub(moved_day, s)) for r, i, s in written]
        request = json.loads(examples.render(path.stem, today))
        assert _cards(request, today, tmp_path) == expected, today


def test_every_date_in_the_examples_is_one_the_shift_moves():
    """A date written in a form the shift does not read, or in an element it does not know,
    would stay behind while the others move: the example would change meaning with time."""
    left_behind = []

    def walk(node, name, where):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, key, f"{where}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, name, where)
        elif isinstance(node, str) and ISO_DAY.match(node):
            if not (examples.is_date_element(name) and examples.FHIR_DATE.fullmatch(node)):
                left_behind.append(f"{where}: {node}")

    for path in FILES:
        walk(json.loads(path.read_text()), "", path.stem)
    assert not left_behind, left_behind
