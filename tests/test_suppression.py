"""Suppression after an override (issue 13, "Learning from feedback"), on SQLite and PostgreSQL.

An override with a reason the route's ``suppression`` block names leaves that route's card
out for the same patient (by the salted hash) for the stated days; the card comes back early
when its evidence changes, at once for another patient, after at most a day for an urgent
card, and the suppression holds across instances sharing the database. Cards left out are
counted in the report; the report counts one outcome per card (the last).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from test_storage import Backend, _postgres_backend, make_settings

from cds_service import report
from cds_service.engine import RuleError, load_rules
from cds_service.service import CdsService, suppression_policy
from cds_service.storage import Store, database
from cds_service.storage.database import utcnow
from cds_service.web.app import create_app

EXAMPLES = Path(__file__).resolve().parents[1] / "fhir_examples"
SERVICE = "/cds-services/leg-cramp-referral"
FEEDBACK = SERVICE + "/feedback"
OVERRIDE_SYSTEM = "urn:leg-cramp-cds:override-reason"
NON_ADHERENCE = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
NEPHROLOGY = "nephrology-egfr-22.json"
URGENT = "urgent-care-critical-potassium.json"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request, tmp_path):
    if request.param == "sqlite":
        yield Backend("sqlite", "", "")
    else:
        yield from _postgres_backend()


@pytest.fixture
def settings(backend, tmp_path):
    # Without authentication (these tests' clients) feedback suppresses only when allowed;
    # tests/test_feedback_trust.py covers the default and JWT clients.
    return make_settings(
        tmp_path, backend.url, patient_hash_salt="shared-secret", suppression_without_auth=True
    )


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    app.extensions["cds_store"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def example(name: str, patient: str | None = None) -> dict:
    request = json.loads((EXAMPLES / name).read_text())
    if patient is not None:
        request = json.loads(json.dumps(request).replace(request["context"]["patientId"], patient))
    return request


def with_new_egfr(request: dict, value: float = 20) -> dict:
    request = copy.deepcopy(request)
    patient = request["context"]["patientId"]
    request["prefetch"]["observations"]["entry"].append(
        {
            "resource": {
                "resourceType": "Observation",
                "id": "new-egfr",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "98979-8"}]},
                "subject": {"reference": f"Patient/{patient}"},
                "effectiveDateTime": "2026-11-20",
                "valueQuantity": {
                    "value": value,
                    "unit": "mL/min/{1.73_m2}",
                    "system": "http://unitsofmeasure.org",
                    "code": "mL/min/{1.73_m2}",
                },
            }
        }
    )
    return request


def cards_by_route(client, request: dict) -> dict[str, dict]:
    response = client.post(SERVICE, json=request)
    assert response.status_code == 200, response.get_data(as_text=True)
    return {c["source"]["topic"]["code"]: c for c in response.get_json()["cards"]}


def store_of(app) -> Store:
    return app.extensions["cds_store"]


def timestamp(delta: timedelta = timedelta()) -> str:
    return (utcnow() + delta).isoformat(timespec="seconds") + "Z"


def override(
    client, store: Store, card: dict, code: str = "already-under-care", at: timedelta = timedelta()
) -> None:
    assert store.flush()  # the issued card is in the database before its feedback
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": timestamp(at),
        "overrideReason": {"reason": {"system": OVERRIDE_SYSTEM, "code": code}},
    }
    response = client.post(FEEDBACK, json={"feedback": [item]})
    assert response.status_code == 200, response.get_data(as_text=True)


def accept(client, store: Store, card: dict, at: timedelta = timedelta()) -> None:
    assert store.flush()
    item = {
        "card": card["uuid"],
        "outcome": "accepted",
        "outcomeTimestamp": timestamp(at),
        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
    }
    response = client.post(FEEDBACK, json={"feedback": [item]})
    assert response.status_code == 200, response.get_data(as_text=True)


def later(store: Store, delta: timedelta) -> None:
    store.clock = lambda: utcnow() + delta


# -- suppression ------------------------------------------------------------------------


def test_override_suppresses_until_evidence_changes_other_patients_unaffected(app, client):
    store = store_of(app)
    first = cards_by_route(client, example(NEPHROLOGY))
    assert "nephrology" in first
    override(client, store, first["nephrology"])

    again = cards_by_route(client, example(NEPHROLOGY))
    assert "nephrology" not in again
    assert set(again) == set(first) - {"nephrology"}

    # Another patient with the same chart still gets the card.
    assert "nephrology" in cards_by_route(client, example(NEPHROLOGY, patient="p-other"))
    # New evidence (a newer eGFR result): the card is back.
    assert "nephrology" in cards_by_route(client, with_new_egfr(example(NEPHROLOGY)))
    # The same evidence two months on: still suppressed; after 90 days: back.
    later(store, timedelta(days=60))
    assert "nephrology" not in cards_by_route(client, example(NEPHROLOGY))
    later(store, timedelta(days=91))
    assert "nephrology" in cards_by_route(client, example(NEPHROLOGY))


def test_reason_that_does_not_suppress_and_acceptance_afterwards(app, client):
    store = store_of(app)
    card = cards_by_route(client, example(NEPHROLOGY))["nephrology"]
    override(client, store, card, code="cds-not-applicable")
    assert "nephrology" in cards_by_route(client, example(NEPHROLOGY))

    card = cards_by_route(client, example(NEPHROLOGY))["nephrology"]
    override(client, store, card, code="patient-declined")
    assert "nephrology" not in cards_by_route(client, example(NEPHROLOGY))
    # A change of mind recorded later (accepted after the override) ends the suppression.
    accept(client, store, card, at=timedelta(minutes=1))
    assert "nephrology" in cards_by_route(client, example(NEPHROLOGY))


def test_urgent_card_comes_back_after_a_day(app, client):
    store = store_of(app)
    card = cards_by_route(client, example(URGENT))["urgent-care"]
    assert card["indicator"] == "critical"
    override(client, store, card, code="patient-declined")
    assert "urgent-care" not in cards_by_route(client, example(URGENT))
    later(store, timedelta(hours=23))
    assert "urgent-care" not in cards_by_route(client, example(URGENT))
    later(store, timedelta(days=1, minutes=1))
    assert "urgent-care" in cards_by_route(client, example(URGENT))


def test_urgent_card_is_capped_at_a_day_whatever_the_policy(app, client):
    store = store_of(app)
    store.suppression_policy = {
        **store.suppression_policy,
        "urgent-care": {(OVERRIDE_SYSTEM, "patient-declined"): 90},
    }
    card = cards_by_route(client, example(URGENT))["urgent-care"]
    override(client, store, card, code="patient-declined")
    assert "urgent-care" not in cards_by_route(client, example(URGENT))
    later(store, timedelta(days=1, minutes=1))
    assert "urgent-care" in cards_by_route(client, example(URGENT))


def test_suppression_holds_across_instances(settings, tmp_path):
    """Two apps (two instances) on one database: the override taken by one suppresses the
    card the other renders."""
    one, two = create_app(settings), create_app(settings)
    try:
        card = cards_by_route(one.test_client(), example(NEPHROLOGY))["nephrology"]
        override(one.test_client(), store_of(one), card)
        assert "nephrology" not in cards_by_route(two.test_client(), example(NEPHROLOGY))
        assert "nephrology" in cards_by_route(two.test_client(), with_new_egfr(example(NEPHROLOGY)))
    finally:
        store_of(one).close()
        store_of(two).close()


def test_store_unavailable_fails_open_and_logs(app, client, caplog):
    store = store_of(app)
    card = cards_by_route(client, example(NEPHROLOGY))["nephrology"]
    override(client, store, card)
    patient = example(NEPHROLOGY)["context"]["patientId"]

    def broken(*_args, **_kwargs):
        from sqlalchemy.exc import OperationalError

        raise OperationalError("SELECT", {}, Exception("connection refused"))

    real_connect = store.engine.connect
    store.engine.connect = broken  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.WARNING):
            assert "nephrology" in cards_by_route(client, example(NEPHROLOGY))
    finally:
        store.engine.connect = real_connect  # type: ignore[method-assign]
    assert "suppressions not read" in caplog.text
    assert patient not in caplog.text


def test_suppressed_cards_are_recorded_and_reported(app, client):
    store = store_of(app)
    card = cards_by_route(client, example(NEPHROLOGY))["nephrology"]
    override(client, store, card)
    cards_by_route(client, example(NEPHROLOGY))
    cards_by_route(client, example(NEPHROLOGY))
    assert store.flush()
    with store.engine.connect() as conn:
        flagged = (
            conn.execute(
                select(database.issued_card.c.route).where(
                    database.issued_card.c.suppressed.is_(True)
                )
            )
            .scalars()
            .all()
        )
        (held,) = conn.execute(select(database.suppression)).all()
    assert flagged == ["nephrology", "nephrology"]
    assert held.route == "nephrology" and held.fingerprint and len(held.patient_hash) == 64
    data = report.build_report(store, None)
    (row,) = [r for r in data["rows"] if r["route"] == "nephrology"]
    assert row["issued"] == 1 and row["suppressed"] == 2 and row["overridden"] == 1
    assert data["totals"]["suppressed"] == 2


# -- one outcome per card in the report -------------------------------------------------


def test_report_counts_the_last_outcome_of_each_card(app, client):
    store = store_of(app)
    card = cards_by_route(client, example(URGENT))["urgent-care"]
    # The sandbox: a click on a suggestion (accepted), then a dismissal (overridden).
    accept(client, store, card, at=timedelta(minutes=-2))
    override(client, store, card, code="cds-not-applicable", at=timedelta(minutes=-1))
    other = cards_by_route(client, example(URGENT, patient="p-two"))["urgent-care"]
    override(client, store, other, code="cds-not-applicable", at=timedelta(minutes=-2))
    accept(client, store, other, at=timedelta(minutes=-1))
    data = report.build_report(store, None)
    (row,) = [r for r in data["rows"] if r["route"] == "urgent-care"]
    assert (row["issued"], row["accepted"], row["overridden"]) == (2, 1, 1)
    assert row["override_reasons"] == [
        {"system": OVERRIDE_SYSTEM, "code": "cds-not-applicable", "cards": 1}
    ]
    assert row["acceptance_rate"] == 0.5
    (week,) = row["weekly"]
    assert (week["issued"], week["accepted"]) == (2, 1)


# -- rule files -------------------------------------------------------------------------


def test_every_route_declares_suppression_and_urgent_is_at_most_a_day(settings):
    policy = CdsService(settings).suppression_policy
    ruleset = load_rules(settings.cards_dir)
    assert {key for key in policy if ":" not in key} == {r.code for r in ruleset.routes}
    # The order services' cards are kept under "service-id:route" (issue 23); an urgent
    # route's order card too is suppressed at most a day.
    assert policy["leg-cramp-order-sign:duplicate-referral"] == {
        (OVERRIDE_SYSTEM, "already-under-care"): 30,
        (NON_ADHERENCE, "cds-not-applicable"): 30,
    }
    assert set(policy["leg-cramp-order-select:urgent-care"].values()) == {1}
    assert policy["urgent-care"] == {
        (OVERRIDE_SYSTEM, "already-under-care"): 1,
        (OVERRIDE_SYSTEM, "patient-declined"): 1,
    }
    assert policy["nephrology"] == {
        (OVERRIDE_SYSTEM, "already-under-care"): 90,
        (OVERRIDE_SYSTEM, "patient-declined"): 90,
    }


def _cards_copy(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    target = tmp_path / "cards"
    shutil.copytree(source, target)
    path = target / "urgent-care.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return target


def test_rule_load_refuses_a_long_urgent_suppression_or_unknown_reason(settings, tmp_path):
    line = "- {reasons: [already-under-care, patient-declined], days: 1}"
    long = _cards_copy(
        tmp_path / "a", settings.cards_dir, line, line.replace("days: 1", "days: 90")
    )
    with pytest.raises(RuleError, match="urgent-care.yaml: field suppression/0/days"):
        suppression_policy(load_rules(long))
    unknown = _cards_copy(
        tmp_path / "b", settings.cards_dir, line, line.replace("patient-declined", "too-busy")
    )
    with pytest.raises(RuleError, match="unknown override reason 'too-busy'"):
        suppression_policy(load_rules(unknown))


# -- feedback that arrives before its card's record is written ------------------------------


def post_override(client, card: dict, code: str = "already-under-care") -> None:
    """The override, posted without waiting for the card record (unlike ``override``)."""
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": timestamp(),
        "overrideReason": {"reason": {"system": OVERRIDE_SYSTEM, "code": code}},
    }
    response = client.post(FEEDBACK, json={"feedback": [item]})
    assert response.status_code == 200, response.get_data(as_text=True)


def another_host(settings):
    """The settings of an instance on another host: the same database, its own data
    directory (so its own card spool, which another host's feedback cannot read)."""
    return settings.model_copy(
        update={
            "data_dir": settings.data_dir.parent / "other-host",
            "database_url": SecretStr(settings.effective_database_url),
        }
    )


def hold_card_writes(store: Store) -> threading.Event:
    """Stall this store's background card writer until the returned event is set."""
    gate = threading.Event()
    write = store._writer._write
    store._writer._write = lambda rows: (gate.wait(30), write(rows))[1]  # type: ignore[method-assign]
    return gate


def feedback_rows(store: Store) -> list:
    with store.engine.connect() as conn:
        return list(
            conn.execute(select(database.feedback.c.card_uuid, database.feedback.c.unknown_card))
        )


def test_override_posted_while_the_card_record_is_queued_suppresses_at_once(app, client):
    """The card record is still in this process's queue (written in the background): the
    feedback waits for it, so the next call already leaves the card out."""
    first = cards_by_route(client, example(NEPHROLOGY))
    post_override(client, first["nephrology"])
    assert "nephrology" not in cards_by_route(client, example(NEPHROLOGY))
    # Near miss: the same race with a reason that does not suppress keeps the card.
    card = cards_by_route(client, example(NEPHROLOGY, patient="p-other"))["nephrology"]
    post_override(client, card, code="cds-not-applicable")
    assert "nephrology" in cards_by_route(client, example(NEPHROLOGY, patient="p-other"))


@pytest.mark.parametrize(
    "code, suppressed", [("patient-declined", True), ("cds-not-applicable", False)]
)
def test_override_that_reaches_another_instance_first_is_adopted_with_the_card(
    settings, monkeypatch, code, suppressed
):
    """Instance one issues the card but has not written its record when instance two gets
    the override: the feedback is acknowledged and stored as for an unknown card, and the
    suppression starts when instance one writes the card record."""
    one, two = create_app(settings), create_app(another_host(settings))
    try:
        gate = hold_card_writes(store_of(one))
        card = cards_by_route(one.test_client(), example(NEPHROLOGY))["nephrology"]
        post_override(two.test_client(), card, code=code)
        assert feedback_rows(store_of(two)) == [(card["uuid"], True)]  # acknowledged, kept
        assert "nephrology" in cards_by_route(two.test_client(), example(NEPHROLOGY))
        gate.set()
        assert store_of(one).flush()
        assert feedback_rows(store_of(two)) == [(card["uuid"], False)]
        again = cards_by_route(two.test_client(), example(NEPHROLOGY))
        assert ("nephrology" not in again) is suppressed
    finally:
        store_of(one).close()
        store_of(two).close()


def test_a_late_adopted_override_never_replaces_a_later_one(settings, monkeypatch):
    """An older override adopted late does not shorten or replace a newer suppression."""
    one, two = create_app(settings), create_app(another_host(settings))
    try:
        gate = hold_card_writes(store_of(one))
        old_card = cards_by_route(one.test_client(), example(NEPHROLOGY))["nephrology"]
        item = {
            "card": old_card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": timestamp(timedelta(days=-30)),
            "overrideReason": {"reason": {"system": OVERRIDE_SYSTEM, "code": "patient-declined"}},
        }
        assert two.test_client().post(FEEDBACK, json={"feedback": [item]}).status_code == 200
        new_card = cards_by_route(two.test_client(), example(NEPHROLOGY))["nephrology"]
        override(two.test_client(), store_of(two), new_card)
        gate.set()
        assert store_of(one).flush()
        with store_of(two).engine.connect() as conn:
            [row] = conn.execute(select(database.suppression.c.card_uuid))
        assert row.card_uuid == new_card["uuid"]
        # The new card's suppression holds (its own issue + 90 days), not the old one's.
        later(store_of(two), timedelta(days=70))
        assert "nephrology" not in cards_by_route(two.test_client(), example(NEPHROLOGY))
    finally:
        store_of(one).close()
        store_of(two).close()


# -- the per-process copy (issue 14: no suppression query on every hook call) -------------


def suppression_queries(store: Store) -> list[str]:
    """The statements on the suppression table from now on (the change token is read on the
    DB-API connection, outside SQLAlchemy, so it is not among them)."""
    seen: list[str] = []

    def note(_conn, _cursor, statement, *_args):
        if "FROM suppression " in statement + " ":
            seen.append(statement)

    from sqlalchemy import event

    event.listen(store.engine, "before_cursor_execute", note)
    return seen


def test_lookups_use_the_copy_until_a_change_anywhere_moves_the_token(settings):
    """Repeated calls for a patient query the suppressions once; an override stored by
    another instance moves the token, so the next call reads them again and suppresses."""
    one, two = create_app(settings), create_app(settings)
    try:
        queries = suppression_queries(store_of(one))
        card = cards_by_route(one.test_client(), example(NEPHROLOGY))["nephrology"]
        for _ in range(3):
            assert "nephrology" in cards_by_route(one.test_client(), example(NEPHROLOGY))
        assert len(queries) == 1
        assert store_of(one).flush()  # the card record, so instance two knows the card
        override(two.test_client(), store_of(two), card)
        assert "nephrology" not in cards_by_route(one.test_client(), example(NEPHROLOGY))
        assert "nephrology" not in cards_by_route(one.test_client(), example(NEPHROLOGY))
        assert len(queries) == 2
        # Another patient's first call reads that patient's rows: one query more.
        cards_by_route(one.test_client(), example(NEPHROLOGY, patient="p-other"))
        assert len(queries) == 3
    finally:
        store_of(one).close()
        store_of(two).close()


def test_expiry_is_checked_on_every_lookup_of_the_copy(app, client):
    store = store_of(app)
    card = cards_by_route(client, example(URGENT))["urgent-care"]
    override(client, store, card, code="patient-declined")
    assert "urgent-care" not in cards_by_route(client, example(URGENT))  # copy filled
    later(store, timedelta(days=1, minutes=1))
    assert "urgent-care" in cards_by_route(client, example(URGENT))  # same copy, expired


def test_without_the_token_row_every_call_reads_the_table(app, client):
    """A token row removed by hand: no copy can be trusted, so each call queries (and
    suppressions still hold)."""
    store = store_of(app)
    with store.engine.begin() as conn:
        conn.execute(database.suppression_generation.delete())
    queries = suppression_queries(store)
    card = cards_by_route(client, example(NEPHROLOGY))["nephrology"]
    override(client, store, card)
    assert "nephrology" not in cards_by_route(client, example(NEPHROLOGY))
    assert "nephrology" not in cards_by_route(client, example(NEPHROLOGY))
    assert len(queries) == 3


def test_a_token_that_cannot_be_read_fails_open_and_recovers(app, client, caplog):
    store = store_of(app)
    card = cards_by_route(client, example(NEPHROLOGY))["nephrology"]
    override(client, store, card)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE suppression_generation RENAME TO kept_aside")
    with caplog.at_level(logging.WARNING):
        assert "nephrology" in cards_by_route(client, example(NEPHROLOGY))  # shown: fail open
    assert "suppressions not read" in caplog.text
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE kept_aside RENAME TO suppression_generation")
    store._lookup_paused_until = 0.0  # the pause after a failure (30 s), skipped here
    assert "nephrology" not in cards_by_route(client, example(NEPHROLOGY))


def test_close_releases_the_connection_kept_for_the_token(settings):
    app = create_app(settings)
    store = store_of(app).wait()  # the open store behind the one the app starts with
    cards_by_route(app.test_client(), example(NEPHROLOGY))
    assert store._token_connection is not None
    store_of(app).close()
    assert store._token_connection is None


def test_a_change_made_outside_this_release_moves_the_token_too(app, client):
    """An older release during a rolling upgrade, or an operator, changes the table without
    knowing of the token: the table's triggers move it, so no copy keeps a stale answer."""
    store = store_of(app)
    card = cards_by_route(client, example(NEPHROLOGY))["nephrology"]
    override(client, store, card)
    assert "nephrology" not in cards_by_route(client, example(NEPHROLOGY))  # copy filled
    with store.engine.begin() as conn:
        conn.execute(database.suppression.delete())
    assert "nephrology" in cards_by_route(client, example(NEPHROLOGY))


def test_an_entry_read_under_another_token_is_never_used(settings):
    """Each patient's entry keeps the token it was read under: an entry a slow thread
    stored under an older token is read again, whatever the interleaving."""
    store = Store(settings)
    store.suppression_policy = {"nephrology": {(OVERRIDE_SYSTEM, "already-under-care"): 30}}
    try:
        store._change_token = lambda: "T2"  # type: ignore[method-assign]
        store._copy["key"] = ("T1", time.monotonic(), (("stale",),))  # fresh, other token
        queried: list[str] = []
        store._query_suppressions = lambda key: queried.append(key) or ()  # type: ignore[method-assign]
        assert store._suppressions_of("key") == ()
        assert store._suppressions_of("key") == ()  # now kept under T2
        assert queried == ["key"]
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_kept_token_connection_cut_by_the_server_is_replaced(app, client):
    """PostgreSQL restarted or an idle connection cut: the kept connection is never
    pre-pinged, so the read is tried once more on a fresh one (no fail-open window)."""
    from sqlalchemy import text

    store = store_of(app)
    card = cards_by_route(client, example(NEPHROLOGY))["nephrology"]
    override(client, store, card)
    assert "nephrology" not in cards_by_route(client, example(NEPHROLOGY))
    kept = store.wait()._token_connection[1]
    cursor = kept.cursor()
    cursor.execute("SELECT pg_backend_pid()")
    backend_pid = cursor.fetchone()[0]
    cursor.close()
    kept.rollback()
    with store.engine.begin() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend_pid})
    assert "nephrology" not in cards_by_route(client, example(NEPHROLOGY))


# -- one suppression per client ---------------------------------------------------------


def test_each_clients_suppression_of_a_route_is_its_own_row_and_read_per_client(settings):
    """Two clients' suppressions of the same patient's route stand side by side; each
    client's lookup (the open store's copy, and a restart's peek at the SQLite file before
    the store opens) finds its own only."""
    from cds_service.storage import StartingStore

    store = Store(settings)
    store.suppression_policy = {"nephrology": {(OVERRIDE_SYSTEM, "patient-declined"): 90}}
    assert store.ensure_schema()
    patient, a, b = "patient-1", "https://ehr-a.example.org", "https://ehr-b.example.org"
    now = utcnow()
    rows = [
        {
            "patient_hash": store.patient_hash(patient),
            "route": "nephrology",
            "card_uuid": f"card-{fingerprint}",
            "reason_code": "patient-declined",
            "fingerprint": fingerprint,
            "indicator": "warning",
            "suppressed_at": now,
            "expires_at": now + timedelta(days=1),
            "client": owner,
        }
        for owner, fingerprint in ((a, "fp-a"), (b, "fp-b"))
    ]
    with store.engine.begin() as conn:
        conn.execute(database.suppression.insert(), rows)

    def lookups(answer) -> list:
        return [answer(patient, ["nephrology"], owner) for owner in (a, b, "https://ehr-c")]

    expected = [
        {"nephrology": {"fingerprint": "fp-a", "indicator": "warning"}},
        {"nephrology": {"fingerprint": "fp-b", "indicator": "warning"}},
        {},
    ]
    try:
        assert lookups(store.active_suppressions) == expected
        assert lookups(store.active_suppressions) == expected  # from the copy
    finally:
        store.close()
    if settings.database_url.get_secret_value():
        return  # the peek reads the default SQLite file only
    restarted = StartingStore(settings, open_delay=None)
    restarted.suppression_policy = store.suppression_policy
    try:
        assert lookups(restarted.active_suppressions) == expected
        assert restarted._opener is None  # answered by the peek, the store not opened
    finally:
        restarted.close()


def test_fingerprint_bytes_are_those_stored_suppressions_were_made_with():
    """A stored suppression compares the fingerprint of the card it hid: the digest must
    stay SHA-256 over ``json.dumps(..., sort_keys=True, ensure_ascii=False)``."""
    import hashlib

    from cds_service.outcome import digest

    material = {
        "route": "nephrology",
        "rules": ["egfr-below-30"],
        "indicator": "warning",
        "evidence": [["eGFR 25 mL/min/1.73m² 2026-11-02 (LOINC 33914-3)", ["Observation/o1"]]],
    }
    canonical = json.dumps(material, sort_keys=True, ensure_ascii=False)
    assert digest(material) == hashlib.sha256(canonical.encode()).hexdigest()
