"""The fidelity matrix (issue 21): every element a rule reads, in every R4 form and in the
invalid forms interfaces send, gives the card its canonical form gives, or an evidence line
saying what could not be read. Never a silent loss, never an invented emergency.

Today is fixed to 2026-11-24 (routes_helpers); the patient was born 1956-03-14.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routes_helpers import (  # noqa: E402
    PATIENT_ID,
    TODAY,
    cards_of,
    condition,
    cramp,
    day,
    evaluate,
    hook_request,
    medication,
    normal_workup,
    observation,
    patient,
    procedure,
    service,
)

from cds_service.engine import evaluate as evaluate_routes  # noqa: E402
from cds_service.engine.criteria.coded import condition_fact  # noqa: E402
from cds_service.engine.record import Record  # noqa: E402
from cds_service.engine.terminology import Concept  # noqa: E402
from cds_service.protocol.fhir_json import decode_request  # noqa: E402
from cds_service.render import evidence  # noqa: E402

DVT = "I82.401"  # acute DVT of the right femoral vein: the urgent-care route
POTASSIUM = "2823-3"
ABI = "446841001"  # SNOMED CT ankle brachial pressure index (the `abi` concept)
UCUM = "http://unitsofmeasure.org"
NOW = datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=UTC)


def route_codes(response: dict) -> list[str]:
    return [card["source"]["topic"]["code"] for card in response["cards"]]


def _without_potassium() -> list[dict]:
    return [r for r in normal_workup() if r["code"]["coding"][0]["code"] != POTASSIUM]


def _potassium(value: float = 2.3, **dates) -> dict:
    """A critical potassium whose date elements are replaced by ``dates``."""
    result = observation(POTASSIUM, value, "mmol/L", 1)
    del result["effectiveDateTime"]
    return {**result, **dates}


def _older_normal_potassium() -> dict:
    return observation(POTASSIUM, 4.1, "mmol/L", 40)


# --------------------------------------------------------- Observation.effective[x], issued

YESTERDAY = day(1)
EFFECTIVE_FORMS = {
    "canonical": {"effectiveDateTime": f"{YESTERDAY}T14:19:00Z"},
    "offset": {"effectiveDateTime": f"{YESTERDAY}T09:19:00-05:00"},
    "no seconds": {"effectiveDateTime": f"{YESTERDAY}T14:19Z"},
    "no zone": {"effectiveDateTime": f"{YESTERDAY}T14:19:00"},
    "no seconds, no zone": {"effectiveDateTime": f"{YESTERDAY}T14:19"},
    "fractional seconds": {"effectiveDateTime": f"{YESTERDAY}T14:19:00.123456789Z"},
    "date only": {"effectiveDateTime": YESTERDAY},
    "HL7 v2 compact": {"effectiveDateTime": YESTERDAY.replace("-", "") + "1419"},
    "space for T": {"effectiveDateTime": f"{YESTERDAY} 14:19:00"},
    "instant": {"effectiveInstant": f"{YESTERDAY}T14:19:00Z"},
    "period": {
        "effectivePeriod": {"start": f"{YESTERDAY}T14:00:00Z", "end": f"{YESTERDAY}T14:19Z"}
    },
    "period start only": {"effectivePeriod": {"start": YESTERDAY}},
    "timing": {"effectiveTiming": {"event": [f"{YESTERDAY}T14:19:00Z"]}},
    "issued only": {"issued": f"{YESTERDAY}T15:00:00Z"},
    "issued as a date only": {"issued": YESTERDAY},
    "effective, and issued as a date": {
        "effectiveDateTime": f"{YESTERDAY}T14:19:00Z",
        "issued": YESTERDAY,  # invalid for an instant: costs only itself
    },
}


@pytest.mark.parametrize("form", EFFECTIVE_FORMS)
def test_a_critical_potassium_is_critical_whatever_the_form_of_its_date(form):
    cards = cards_of(
        _potassium(**EFFECTIVE_FORMS[form]), _older_normal_potassium(), *_without_potassium()
    )
    assert "urgent-care" in cards, form
    assert "Potassium 2.3 mmol/L" in cards["urgent-care"]["detail"]


@pytest.mark.parametrize(
    "dates, shown",
    [
        ({"effectiveDateTime": "yesterday"}, 'date unreadable ("yesterday")'),
        ({"effectiveDateTime": "2026-13-45"}, 'date unreadable ("2026-13-45")'),
        ({"effectiveDateTime": 20261123}, 'date unreadable ("20261123")'),
        ({"effectivePeriod": {"start": "soon"}}, 'date unreadable ("soon")'),
        ({"effectiveDateTime": "03/04/2019", "issued": f"{YESTERDAY}T08:00:00Z"}, "03/04/2019"),
        ({}, "date not recorded"),
        ({"effectiveDateTime": day(-2)}, "after today"),
        ({"effectiveDateTime": day(-1)}, "after today"),  # tomorrow, a day only
    ],
)
def test_a_result_that_cannot_be_placed_in_time_is_listed_for_review(dates, shown):
    """A result whose date cannot be read (or is after today) never decides and is never
    dropped: it is listed for review, and the readable results decide. An ``issued`` date
    (often when an interface loaded it) never stands in for an unreadable effective date."""
    cards = cards_of(_potassium(**dates), _older_normal_potassium(), *_without_potassium())
    assert "urgent-care" not in cards  # its date is unknown: no emergency from it alone
    workup = cards["primary-care-workup"]["detail"]
    assert "Potassium 2.3 mmol/L (LOINC 2823-3)" in workup and shown in workup
    assert "not used by any rule, review this result" in workup
    assert "none on record" not in workup


def test_a_result_of_unknown_date_never_hides_a_known_critical_one():
    """A critical potassium yesterday stays critical beside a normal one of unknown date."""
    unknown = {**_older_normal_potassium(), "effectiveDateTime": "03/04/2019"}
    cards = cards_of(_potassium(effectiveDateTime=f"{YESTERDAY}T08:00:00Z"), unknown)
    assert "urgent-care" in cards and "Potassium 2.3 mmol/L" in cards["urgent-care"]["detail"]
    workup = cards["primary-care-workup"]["detail"]
    assert 'Potassium 4.1 mmol/L (LOINC 2823-3), date unreadable ("03/04/2019")' in workup


def test_without_a_readable_date_a_missing_line_never_says_none_on_record():
    cards = cards_of(_potassium(effectiveDateTime="yesterday"), *_without_potassium())
    workup = cards["primary-care-workup"]["detail"]
    assert "none on record" not in workup
    assert 'date unreadable ("yesterday")' in workup


def test_issued_dates_a_result_only_without_any_effective_time_and_says_so():
    cards = cards_of(_potassium(issued=f"{YESTERDAY}T15:00:00Z"), *_without_potassium())
    detail = cards["urgent-care"]["detail"]
    assert f"on {YESTERDAY} (reported then; collection date not recorded)" in detail


# --------------------------------------------------------------- Condition.onset[x]

DVT_ONSET_FORMS = {
    "canonical": {"onsetDateTime": day(2)},
    "time, no seconds": {"onsetDateTime": f"{day(2)}T14:19Z"},
    "time, no zone": {"onsetDateTime": f"{day(2)}T14:19:00"},
    "offset": {"onsetDateTime": f"{day(2)}T14:19:00+02:00"},
    "month only": {"onsetDateTime": day(2)[:7]},  # 2026-11: may be last week
    "period": {"onsetPeriod": {"start": day(3), "end": day(1)}},
    "period end only": {"onsetPeriod": {"end": day(1)}},
    "text with the date": {"onsetString": day(2)},
}


@pytest.mark.parametrize("form", DVT_ONSET_FORMS)
def test_a_new_dvt_is_an_emergency_whatever_the_form_of_its_onset(form):
    dvt = condition(DVT, onset=None)
    cards = cards_of({**dvt, **DVT_ONSET_FORMS[form]}, *normal_workup())
    assert "urgent-care" in cards, form
    assert cards["urgent-care"]["indicator"] == "critical"


def test_a_month_only_onset_is_shown_as_a_month():
    cards = cards_of({**condition(DVT, onset=None), "onsetDateTime": "2026-11"}, *normal_workup())
    detail = cards["urgent-care"]["detail"]
    assert "onset 2026-11" in detail and "2026-11-01" not in detail


OLD_DVT_FORMS = {
    "age 31": {"onsetAge": {"value": 31, "unit": "years", "system": UCUM, "code": "a"}},
    "age range": {
        "onsetRange": {"low": {"value": 31, "code": "a"}, "high": {"value": 32, "code": "a"}}
    },
    "text with a year": {"onsetString": "2009, after knee surgery"},
    "period": {"onsetPeriod": {"start": "2009-05-01", "end": "2009-06-01"}},
    "year only": {"onsetDateTime": "1999"},
}


@pytest.mark.parametrize("form", OLD_DVT_FORMS)
def test_an_old_dvt_in_any_form_is_no_emergency(form):
    """A clot decades old, dated by the patient's age or a text, is not a same-day card."""
    old = {**condition(DVT, onset=None), **OLD_DVT_FORMS[form]}
    assert "urgent-care" not in cards_of(old, *normal_workup())


@pytest.mark.parametrize(
    "form, shown",
    [
        ("age 31", "onset at age 31, about 1987"),
        ("age range", "onset at age 31, about 1987"),
        ("text with a year", 'onset "2009, after knee surgery", about 2009'),
        ("period", "onset 2009-05-01"),
        ("year only", "onset 1999"),
    ],
)
def test_an_onset_is_shown_as_it_was_read(form, shown):
    """The evidence line says how an onset was read: an age with the year it gives, a text
    with the year found in it, a year as a year."""
    resource = {**condition(DVT, onset=None), **OLD_DVT_FORMS[form]}
    record = Record("p-routes", [patient(), resource], NOW, service().ruleset.codes)
    concept = Concept("http://hl7.org/fhir/sid/icd-10-cm", DVT, "DVT")
    assert shown in evidence.text(condition_fact(record, "c", resource, concept))


def test_an_onset_age_without_a_birth_date_is_unreadable_and_says_why():
    resource = {**condition(DVT, onset=None), **OLD_DVT_FORMS["age 31"]}
    who = {"resourceType": "Patient", "id": "p-routes"}
    record = Record("p-routes", [who, resource], NOW, service().ruleset.codes)
    concept = Concept("http://hl7.org/fhir/sid/icd-10-cm", DVT, "DVT")
    line = evidence.text(condition_fact(record, "c", resource, concept))
    assert 'date unreadable ("at age 31, no birth date on record")' in line


def test_the_leg_cramp_gate_reads_an_onset_age():
    gate = {**cramp(onset=None), "onsetAge": {"value": 70, "code": "a"}}
    request = hook_request(gate, condition(DVT, onset=2), *normal_workup(), gate=False)
    assert route_codes(evaluate(request)) == ["urgent-care"]


@pytest.mark.parametrize("text", ["yesterday", "after the knee surgery", "some years ago"])
def test_an_onset_text_without_a_date_counts_as_undated_and_says_so(text):
    """An acute DVT whose onset cannot be read counts as recent (never missed), and the card
    shows what was written instead of "not recorded"."""
    dvt = {**condition(DVT, onset=None), "onsetString": text}
    cards = cards_of(dvt, *normal_workup())
    detail = cards["urgent-care"]["detail"]
    assert f'date unreadable ("{text}")' in detail
    assert "counted as recent" in detail


@pytest.mark.parametrize(
    "abatement",
    [
        {"abatementDateTime": day(1)},
        {"abatementDateTime": f"{day(1)}T10:00"},
        {"abatementAge": {"value": 70, "code": "a"}},
        {"abatementPeriod": {"start": day(1)}},
        {"abatementRange": {"low": {"value": 70, "code": "a"}}},
        {"abatementString": "resolved after treatment"},
        {"abatementBoolean": True},
    ],
)
def test_an_abated_dvt_is_no_emergency_in_any_abatement_form(abatement):
    dvt = {**condition(DVT, onset=2), **abatement}
    assert "urgent-care" not in cards_of(dvt, *normal_workup())


def test_a_false_abatement_boolean_is_not_an_abatement():  # near miss
    dvt = {**condition(DVT, onset=2), "abatementBoolean": False}
    assert "urgent-care" in cards_of(dvt, *normal_workup())


@pytest.mark.parametrize(
    "onset",
    [f"{day(30)}T08:00", f"{day(30)}T08:00:00", "20261025", f"{day(30)}T08:00Z", day(30)[:7]],
)
def test_the_leg_cramp_gate_opens_whatever_the_form_of_its_onset(onset):
    gate = {**cramp(onset=None), "onsetDateTime": onset}
    request = hook_request(gate, condition(DVT, onset=2), *normal_workup(), gate=False)
    assert route_codes(evaluate(request)) == ["urgent-care"], onset


# ------------------------------------------------------------------- Observation.component


def _abi_panel(right: float, left: float) -> dict:
    """One Observation for both legs, each side a component (as many vascular labs send)."""

    def side(name: str, value: float) -> dict:
        return {
            "code": {
                "coding": [{"system": "http://snomed.info/sct", "code": ABI}],
                "text": f"{name} ankle brachial index",
            },
            "valueQuantity": {
                "value": value,
                "unit": "{ratio}",
                "system": "http://unitsofmeasure.org",
                "code": "{ratio}",
            },
        }

    return {
        "resourceType": "Observation",
        "id": "abi-panel",
        "status": "final",
        "code": {
            "coding": [{"system": "urn:local:vascular-lab", "code": "ABI-PANEL"}],
            "text": "ABI",
        },
        "subject": {"reference": "Patient/p-routes"},
        "effectiveDateTime": day(10),
        "component": [side("Right", right), side("Left", left)],
    }


def test_an_abi_sent_as_components_of_one_panel_fires_on_the_low_side():
    cards = cards_of(_abi_panel(0.95, 0.62), *normal_workup())
    assert "vascular" in cards
    assert "0.62" in cards["vascular"]["detail"]
    assert "Observation/abi-panel" in str(cards["vascular"])


def test_an_abi_panel_with_both_sides_normal_gives_no_vascular_card():  # near miss
    assert "vascular" not in cards_of(_abi_panel(1.05, 0.98), *normal_workup())


# ---------------------------------------------------------- MedicationRequest.authoredOn


@pytest.mark.parametrize(
    "authored", [f"{day(60)}T10:00", f"{day(60)}T10:00:00", day(60)[:7], "yesterday", None]
)
def test_a_statin_is_reviewed_whatever_the_form_of_its_order_date(authored):
    statin = medication("617312", "atorvastatin 10 MG Oral Tablet")
    if authored is None:
        del statin["authoredOn"]
    else:
        statin["authoredOn"] = authored
    assert "medication-review" in cards_of(statin, *normal_workup())


# ----------------------------------------------------------------- Patient.birthDate


@pytest.mark.parametrize("birth", ["1956-03-14", "1956-03", "1956"])
def test_an_egfr_is_estimated_from_a_birth_date_at_any_precision(birth):
    """CKD-EPI needs an age: a partial birth date still gives one (to the year)."""
    creatinine = observation("2160-0", 2.6, "mg/dL", 5)
    workup = [r for r in normal_workup() if r["code"]["coding"][0]["code"] != "2160-0"]
    cards = cards_of(creatinine, *workup, who=patient(birth=birth))
    assert "nephrology" in cards
    assert "estimated" in cards["nephrology"]["detail"]


# ----------------------------------------------------------------------- value[x]


@pytest.mark.parametrize(
    "value",
    [
        {
            "valueQuantity": {
                "value": 2.3,
                "unit": "mmol/L",
                "system": "http://unitsofmeasure.org",
                "code": "mmol/L",
            }
        },
        {"valueQuantity": {"value": 2.3, "unit": "mmol/L"}},  # unit as text only
        {
            "valueQuantity": {
                "value": 2.3,
                "unit": "mEq/L",
                "system": "http://unitsofmeasure.org",
                "code": "meq/L",
            }
        },
        {"valueString": "2.3 mmol/L"},
        {"valueString": "<2.5 mmol/L"},
    ],
)
def test_a_critical_potassium_is_critical_whatever_the_form_of_its_value(value):
    result = {
        k: v for k, v in observation(POTASSIUM, 0, "mmol/L", 1).items() if k != "valueQuantity"
    }
    cards = cards_of({**result, **value}, _older_normal_potassium(), *_without_potassium())
    assert "urgent-care" in cards, value


def test_a_unit_given_only_as_text_is_said_on_the_card():
    result = observation(POTASSIUM, 2.3, "mmol/L", 1)
    result["valueQuantity"] = {"value": 2.3, "unit": "mmol/L"}
    detail = cards_of(result, *_without_potassium())["urgent-care"]["detail"]
    assert 'unit given as text only ("mmol/L")' in detail


def test_a_censored_result_is_shown_with_its_comparator():
    result = observation(POTASSIUM, 2.5, "mmol/L", 1)
    result["valueQuantity"]["comparator"] = "<"
    detail = cards_of(result, *_without_potassium())["urgent-care"]["detail"]
    assert "Potassium <2.5 mmol/L" in detail


# ------------------------------------------------------------ MedicationRequest.status


@pytest.mark.parametrize("status, indicator", [("active", "warning"), ("on-hold", "critical")])
def test_only_an_active_anticoagulant_counts_as_treatment_of_a_new_dvt(status, indicator):
    """An anticoagulant on hold is not being taken: the new DVT stays an emergency."""
    apixaban = medication(None, "Apixaban 5 MG Oral Tablet", status=status, authored=1)
    cards = cards_of(condition(DVT, onset=3), apixaban, *normal_workup())
    assert cards["urgent-care"]["indicator"] == indicator


# ----------------------------------------------------------- review findings, each pinned


def test_an_onset_age_that_lands_on_29_february_is_read():
    """An approximate year starting on 29 February ends on 1 March: no crash, and the
    other (new) DVT keeps its emergency card."""
    old = {**condition(DVT, onset=None), "onsetAge": {"value": 32, "code": "a"}}
    cards = cards_of(
        old, condition(DVT, onset=2), *normal_workup(), who=patient(birth="1968-02-29")
    )
    assert cards["urgent-care"]["indicator"] == "critical"


def test_an_onset_period_counts_in_the_window_until_its_end():
    """A DVT from early October to two days ago is recent: its period ends in the window."""
    dvt = {**condition(DVT, onset=None), "onsetPeriod": {"start": day(60), "end": day(2)}}
    assert cards_of(dvt, *normal_workup())["urgent-care"]["indicator"] == "critical"


def test_an_onset_age_range_counts_until_the_end_of_its_high_age():
    span = {"low": {"value": 60, "code": "a"}, "high": {"value": 70, "code": "a"}}
    dvt = {**condition(DVT, onset=None), "onsetRange": span}  # born 1956: 2016 to 2027
    assert "urgent-care" in cards_of(dvt, *normal_workup())


def test_an_onset_age_older_than_the_patient_is_unreadable():
    resource = {**condition(DVT, onset=None), "onsetAge": {"value": 80, "code": "a"}}
    record = Record("p-routes", [patient(), resource], NOW, service().ruleset.codes)
    concept = Concept("http://hl7.org/fhir/sid/icd-10-cm", DVT, "DVT")
    line = evidence.text(condition_fact(record, "c", resource, concept))
    assert 'date unreadable ("at age 80, after today")' in line


@pytest.mark.parametrize(
    "abatement, shown",
    [
        ({"abatementDateTime": day(-90)}, f"abatement recorded ({day(-90)})"),
        ({"abatementDateTime": "when it resolves"}, 'date unreadable ("when it resolves")'),
        ({"abatementAge": {"value": 90, "code": "a"}}, "after today"),
    ],
)
def test_an_abatement_after_today_or_unreadable_does_not_hide_a_new_dvt(abatement, shown):
    dvt = {**condition(DVT, onset=2), **abatement}
    cards = cards_of(dvt, *normal_workup())
    assert cards["urgent-care"]["indicator"] == "critical"
    assert shown in cards["urgent-care"]["detail"]
    assert "not read as resolved: check" in cards["urgent-care"]["detail"]


def _apixaban_statement(**effective) -> dict:
    return {
        "resourceType": "MedicationStatement",
        "id": "apixaban",
        "status": "active",
        "subject": {"reference": "Patient/p-routes"},
        "medicationCodeableConcept": {"text": "Apixaban 5 MG Oral Tablet"},
        **effective,
    }


@pytest.mark.parametrize(
    "effective, indicator",
    [
        ({"effectivePeriod": {"start": day(-10)}}, "critical"),  # starts in ten days
        ({"effectiveDateTime": day(-5)}, "critical"),
        ({"effectivePeriod": {"start": day(1)}}, "warning"),  # started yesterday: treated
    ],
)
def test_an_anticoagulant_not_yet_started_does_not_treat_a_new_dvt(effective, indicator):
    request = hook_request(condition(DVT, onset=3), *normal_workup())
    request["prefetch"]["medicationstatements"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": _apixaban_statement(**effective)}],
    }
    cards = {c["source"]["topic"]["code"]: c for c in evaluate(request)["cards"]}
    assert cards["urgent-care"]["indicator"] == indicator


def test_a_time_is_shown_as_the_day_it_was_in_the_local_zone():
    from zoneinfo import ZoneInfo

    from cds_service.engine.dates import Reader
    from cds_service.render.dates import day as shown_day

    local = Reader(ZoneInfo("America/New_York"))
    assert shown_day(local.date("2026-12-07T01:30:00Z")) == "2026-12-06"
    assert shown_day(local.date("2026-12-06T20:30:00-05:00")) == "2026-12-06"
    assert shown_day(Reader().date("2026-12-07T01:30:00Z")) == "2026-12-07"


# --- Dates written at any time of their day (a vignette's date-only values sent as instants)
SPINAL_STENOSIS = "M48.062"  # lasting 180 days: orthopedics; less: physical medicine first


def _stenosis_cards(onset: str) -> dict[str, str]:
    stenosis = {**condition(SPINAL_STENOSIS, onset=None), "onsetDateTime": onset}
    return {
        route: card["indicator"] for route, card in cards_of(stenosis, *normal_workup()).items()
    }


@pytest.mark.parametrize("time", ["", "T00:00:00Z", "T12:00:00Z", "T12:00", "T23:59:00+00:00"])
def test_lasting_180_days_is_counted_in_days_whatever_the_time_of_its_onset(time):
    assert _stenosis_cards(day(180) + time) == _stenosis_cards(day(180))
    assert "orthopedics" in _stenosis_cards(day(180) + time)
    assert "orthopedics" not in _stenosis_cards(day(179) + time)  # near miss: a day short


def _dialysis_rules(performed: str) -> list[str]:
    session = {**procedure("302497006", 0), "performedDateTime": performed}
    request = hook_request(
        condition("N18.6", onset=700), session, observation(POTASSIUM, 3.1, "mmol/L", 4)
    )
    outcome = service().evaluate(decode_request(orjson.dumps(request)))
    return [rule for rules in outcome.rule_ids for rule in rules.split(",")]


@pytest.mark.parametrize("time", ["T00:00:00Z", "T10:00:00Z", "T10:00", "T23:30:00+00:00"])
def test_a_procedure_done_today_counts_whatever_the_time_it_was_written_with(time):
    assert "dialysis-recent" in _dialysis_rules(day(0))
    assert "dialysis-recent" in _dialysis_rules(day(0) + time)


def test_a_procedure_dated_after_today_does_not_count():  # near miss
    assert "dialysis-recent" not in _dialysis_rules(day(-2) + "T10:00:00Z")


def test_what_a_result_says_in_free_text_reaches_the_card_but_never_the_logs(caplog):
    result = observation(POTASSIUM, 2.3, "mmol/L", 1)
    result["valueQuantity"] = {"value": 2.3, "unit": "Jane Doe 555"}  # free text as unit
    caplog.set_level("DEBUG")
    detail = cards_of(result, *_without_potassium())["primary-care-workup"]["detail"]
    assert "Jane Doe" in detail  # said to the clinician, who sees the chart anyway
    assert "potassium result is unreadable" in caplog.text
    assert "Jane" not in caplog.text


# --- "After today" begins at the next local midnight, whatever the clock says now
AFTERNOON = datetime(TODAY.year, TODAY.month, TODAY.day, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize("performed", [day(-1), f"{day(-1)}T10:00:00Z", f"{day(-1)}T00:00"])
def test_a_procedure_dated_tomorrow_is_after_today_at_any_hour_of_today(monkeypatch, performed):
    monkeypatch.setattr(service(), "now", lambda: AFTERNOON)  # production: the clock
    assert "dialysis-recent" not in _dialysis_rules(performed)
    assert "dialysis-recent" in _dialysis_rules(f"{day(0)}T10:00:00Z")  # near miss: today


def test_a_result_dated_tomorrow_never_decides_in_the_afternoon(monkeypatch):
    monkeypatch.setattr(service(), "now", lambda: AFTERNOON)
    tomorrow = _potassium(effectiveDateTime=f"{day(-1)}T09:00:00Z")
    cards = cards_of(tomorrow, _older_normal_potassium(), *_without_potassium())
    assert "urgent-care" not in cards
    assert "after today" in cards["primary-care-workup"]["detail"]


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Berlin"])
def test_lasting_is_counted_in_local_calendar_days_late_in_the_evening(zone):
    """Late in the local evening, across a change of daylight saving time: 179 days is
    still short of 180 (a cut-off taken in UTC before the change was a day off)."""
    local = ZoneInfo(zone)
    evening = datetime(2026, 12, 7, 23, 30, tzinfo=local).astimezone(UTC)  # as the clock

    def routes(onset_days: int) -> list[str]:
        onset = (evening.astimezone(local).date() - timedelta(days=onset_days)).isoformat()
        stenosis = {**condition(SPINAL_STENOSIS, onset=None), "onsetDateTime": onset}
        resources = [patient(), cramp(), stenosis, *normal_workup()]
        record = Record(PATIENT_ID, resources, evening, service().ruleset.codes, local=local)
        return [r.route.code for r in evaluate_routes(service().ruleset, record)]

    assert "orthopedics" in routes(180)
    assert "orthopedics" not in routes(179)
