"""The reading layer itself (issue 21): each FHIR form of a date, what it is read as, and
how the reading is marked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cds_service.config import ConfigError, Settings
from cds_service.engine.dates import (
    APPROXIMATE,
    EXACT,
    LOCAL,
    PARTIAL,
    REPORTED,
    Reader,
    Unreadable,
    When,
    how_of,
    precision_of,
)
from cds_service.engine.reading import observation_when, onset, quantity_of

CHICAGO = ZoneInfo("America/Chicago")


@pytest.mark.parametrize(
    "text, at, precision, how",
    [
        ("2026", datetime(2026, 1, 1, tzinfo=UTC), "year", PARTIAL),
        ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), "month", PARTIAL),
        ("2026-12-06", datetime(2026, 12, 6, tzinfo=UTC), "day", PARTIAL),
        ("2026-12-06T14:19:07Z", datetime(2026, 12, 6, 14, 19, 7, tzinfo=UTC), "time", EXACT),
        ("2026-12-06T14:19Z", datetime(2026, 12, 6, 14, 19, tzinfo=UTC), "time", EXACT),
        ("2026-12-06T09:19:00-05:00", datetime(2026, 12, 6, 14, 19, tzinfo=UTC), "time", EXACT),
        ("2026-12-06T09:19-0500", datetime(2026, 12, 6, 14, 19, tzinfo=UTC), "time", EXACT),
        ("2026-12-06T14:19:00", datetime(2026, 12, 6, 14, 19, tzinfo=UTC), "time", LOCAL),
        ("2026-12-06T14:19", datetime(2026, 12, 6, 14, 19, tzinfo=UTC), "time", LOCAL),
        ("2026-12-06 14:19:00Z", datetime(2026, 12, 6, 14, 19, tzinfo=UTC), "time", EXACT),
        ("20261206", datetime(2026, 12, 6, tzinfo=UTC), "day", PARTIAL),
        ("202612061419", datetime(2026, 12, 6, 14, 19, tzinfo=UTC), "time", LOCAL),
        ("2026-12-06T23:59:60Z", datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC), "time", EXACT),
        (
            "2026-12-06T14:19:00.123456789Z",
            datetime(2026, 12, 6, 14, 19, 0, 123456, tzinfo=UTC),
            "time",
            EXACT,
        ),
    ],
)
def test_every_form_of_a_date_is_read_and_marked(text, at, precision, how):
    read = Reader().date(text)
    assert isinstance(read, datetime) and read.tzinfo is not None
    assert read == at and (precision_of(read), how_of(read)) == (precision, how)
    assert isinstance(read, When) is (how != EXACT)  # an exact instant stays plain


@pytest.mark.parametrize(
    "value", ["yesterday", "2026-13-01", "2026-02-30", "202612", "", "2026-12-06T25:00Z", 5, []]
)
def test_what_is_not_a_date_is_unreadable_not_absent(value):
    read = Reader().date(value)
    assert isinstance(read, Unreadable)
    assert read.said == str(value)[:40]


def test_nothing_written_is_none():
    assert Reader().date(None) is None


def test_a_time_without_a_zone_is_read_in_the_configured_zone():
    read = Reader(CHICAGO).date("2026-12-06T14:19:00")
    assert read.how == LOCAL
    assert read == datetime(2026, 12, 6, 20, 19, tzinfo=UTC)  # CST is UTC-6
    assert Reader(CHICAGO).date("2026-12-06T14:19:00Z") == datetime(
        2026, 12, 6, 14, 19, tzinfo=UTC
    )  # a written zone wins


def test_a_partial_date_is_an_interval():
    month = Reader().date("2026-02")
    assert month.until == datetime(2026, 3, 1, tzinfo=UTC)
    assert month.last == datetime(2026, 3, 1, tzinfo=UTC) - timedelta(microseconds=1)
    year = Reader().date("2026")
    assert year.until == datetime(2027, 1, 1, tzinfo=UTC)


def test_an_onset_age_is_an_approximate_date_from_the_birth_date():
    reader = Reader()
    birth = reader.date("1968-05-01")
    read = onset(reader, {"onsetAge": {"value": 31, "code": "a"}}, birth)
    assert read.how == APPROXIMATE and read.year == 1999 and read.said == "age 31"
    months = onset(reader, {"onsetAge": {"value": 6, "code": "mo"}}, birth)
    assert months.year == 1968 and months.month in (10, 11)
    unknown_unit = onset(reader, {"onsetAge": {"value": 31, "code": "parsec"}}, birth)
    assert isinstance(unknown_unit, Unreadable)


def test_an_onset_text_gives_its_year_only_when_it_holds_exactly_one():
    reader = Reader()
    assert onset(reader, {"onsetString": "2009, after knee surgery"}, None).year == 2009
    assert isinstance(onset(reader, {"onsetString": "between 2009 and 2012"}, None), Unreadable)
    assert isinstance(onset(reader, {"onsetString": "as a teenager"}, None), Unreadable)


def test_the_first_readable_onset_form_wins_over_an_unreadable_one():
    read = onset(Reader(), {"onsetDateTime": "soon", "onsetPeriod": {"start": "2026-11-01"}}, None)
    assert isinstance(read, datetime) and read.month == 11


def test_issued_is_read_only_when_there_is_no_effective_time():
    reader = Reader()
    both = {"effectiveDateTime": "2026-11-20T08:00:00Z", "issued": "2026-11-21"}
    assert observation_when(reader, both).day == 20
    bad = {"effectiveDateTime": "yesterday", "issued": "2026-11-21"}
    assert observation_when(reader, bad) == Unreadable("yesterday")  # never the load time
    only = observation_when(reader, {"issued": "2026-11-21T10:00:00Z"})
    assert only.day == 21 and how_of(only) == REPORTED


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2.9", {"value": 2.9, "from_text": True}),
        ("<2.5 mmol/L", {"value": 2.5, "comparator": "<", "unit": "mmol/L", "from_text": True}),
        (">= 10 mg/dL", {"value": 10.0, "comparator": ">=", "unit": "mg/dL", "from_text": True}),
        ("hemolyzed", None),
        ("see note", None),
    ],
)
def test_a_number_written_as_text_is_read_with_its_comparator_and_unit(text, expected):
    assert quantity_of({"valueString": text}) == expected


def test_cds_local_timezone_is_checked_at_start_up():
    assert Settings.from_env({"CDS_LOCAL_TIMEZONE": "America/Chicago"}).local_zone == CHICAGO
    with pytest.raises(ConfigError, match="CDS_LOCAL_TIMEZONE"):
        Settings.from_env({"CDS_LOCAL_TIMEZONE": "Mars/Olympus"})
