"""Issued cards and feedback in the database (issue 7), on SQLite and on PostgreSQL.

Every test runs against both backends: SQLite (a file in a temporary data dir) and
PostgreSQL at ``CDS_TEST_POSTGRES_URL`` (each test in its own throwaway schema); the
PostgreSQL runs are skipped when the variable is unset (``.ci/run`` sets it).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import stat
import threading
import time
import uuid
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, inspect, select, text
from sqlalchemy.engine import make_url
from synthea import SYNTHEA_DIR, hook_request

from cds_service import cli
from cds_service.config import Settings
from cds_service.service import CdsService
from cds_service.storage import SALT_FILE, Store, card_batches, database, migrations
from cds_service.web.app import create_app

# A chart whose nephrology card offers a referral (a low eGFR to repeat), as feedback needs.
KIDNEY_CHART = SYNTHEA_DIR / "Daryl_Heaney_f44fe3a9.json"
SERVICE = "/cds-services/leg-cramp-referral"
FEEDBACK = SERVICE + "/feedback"
OVERRIDE_SYSTEM = "urn:leg-cramp-cds:override-reason"
PG_ENV = "CDS_TEST_POSTGRES_URL"


# -- backends ---------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    url: str  # "" = the default SQLite file in the data dir
    down_url: str  # a database that cannot be reached


def _postgres_backend():
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} not set (no PostgreSQL server for tests)")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(base)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # a configured but broken server is a failure, not a skip
        admin.dispose()
        pytest.fail(f"cannot use PostgreSQL at {PG_ENV}: {type(exc).__name__}: {exc}")
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    down = make_url(base).set(host="127.0.0.1", port=1).update_query_dict({"connect_timeout": "2"})
    try:
        yield Backend(
            "postgresql",
            url.render_as_string(hide_password=False),
            down.render_as_string(hide_password=False),
        )
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request, tmp_path):
    if request.param == "sqlite":
        not_a_dir = tmp_path / "not-a-directory"
        not_a_dir.write_text("")
        yield Backend("sqlite", "", f"sqlite:///{not_a_dir / 'cds.sqlite3'}")
    else:
        yield from _postgres_backend()


def make_settings(tmp_path: Path, database_url: str, **extra) -> Settings:
    return Settings.from_env(
        {}, today="2026-11-24", data_dir=tmp_path / "data", database_url=database_url, **extra
    )


@pytest.fixture
def settings(backend, tmp_path):
    return make_settings(tmp_path, backend.url)


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    app.extensions["cds_store"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def store_of(app) -> Store:
    return app.extensions["cds_store"]


def rows(store: Store, table) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table))]


def call_hook(client, path: Path = KIDNEY_CHART) -> tuple[dict, list[dict]]:
    """(request, cards); the cards always include the nephrology one (first)."""
    request = hook_request(path)
    response = client.post(SERVICE, json=request)
    assert response.status_code == 200, response.get_data(as_text=True)
    cards = response.get_json()["cards"]
    cards.sort(key=lambda c: c["source"]["topic"]["code"] != "nephrology")
    assert cards and cards[0]["source"]["topic"]["code"] == "nephrology"
    return request, cards


def expected_rules(settings: Settings, request: dict) -> dict[str, str]:
    """Route -> comma-joined fired criteria, as the service computes them for ``request``."""
    outcome = CdsService(settings).evaluate(request)
    return dict(zip(outcome.routes, outcome.rule_ids, strict=True))


def accepted(card: dict, at: str = "2026-11-24T10:00:00Z") -> dict:
    return {
        "card": card["uuid"],
        "outcome": "accepted",
        "outcomeTimestamp": at,
        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
    }


def overridden(
    card_uuid: str,
    code: str | None = "already-under-care",
    at: str = "2026-11-24T10:05:00Z",
    comment: str | None = None,
) -> dict:
    reason = {}
    if code:
        reason["reason"] = {"system": OVERRIDE_SYSTEM, "code": code}
    if comment:
        reason["userComment"] = comment
    item = {"card": card_uuid, "outcome": "overridden", "outcomeTimestamp": at}
    if reason:
        item["overrideReason"] = reason
    return item


# -- issued cards -----------------------------------------------------------------------


def test_hook_call_records_cards_with_hashed_patient_only(app, client, settings, backend):
    request, cards = call_hook(client)
    patient_id = request["context"]["patientId"]
    store = store_of(app)
    store.close()  # close() writes what is queued

    recorded = {r["card_uuid"]: r for r in rows(store, database.issued_card)}
    assert set(recorded) == {c["uuid"] for c in cards}
    rules = expected_rules(settings, request)
    salt_file = settings.data_dir / SALT_FILE
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    salt = salt_file.read_text().strip().encode()
    for card in cards:
        row = recorded[card["uuid"]]
        assert row["route"] == card["source"]["topic"]["code"]
        assert row["rule_ids"] == rules[row["route"]] != ""
        assert row["hook_instance"] == request["hookInstance"]
        assert (
            row["patient_hash"] == hmac.new(salt, patient_id.encode(), hashlib.sha256).hexdigest()
        )

    # The raw patient id appears nowhere: not in any column of any table ...
    engine = create_engine(store.engine.url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        assert {"issued_card", "feedback", "alembic_version"} <= set(meta.tables)
        with engine.connect() as conn:
            for table in meta.tables.values():
                for db_row in conn.execute(select(table)):
                    assert patient_id not in repr(tuple(db_row)), table.name
    finally:
        engine.dispose()
    # ... nor in the bytes of the SQLite files (database, WAL, salt).
    if backend.name == "sqlite":
        for path in settings.data_dir.iterdir():
            assert patient_id.encode() not in path.read_bytes(), path.name


def test_configured_salt_is_used_and_no_salt_file_is_written(backend, tmp_path):
    settings = make_settings(tmp_path, backend.url, patient_hash_salt="s3cret")
    store = Store(settings)
    try:
        store.save_issued_cards("hook-1", "patient-1", [{"uuid": "card-1", "source": {}}], [""])
        assert store.flush()
        (row,) = rows(store, database.issued_card)
        assert row["patient_hash"] == hmac.new(b"s3cret", b"patient-1", hashlib.sha256).hexdigest()
        assert row["route"] == "unknown"
        assert not (settings.data_dir / SALT_FILE).exists()
    finally:
        store.close()


def test_generated_salt_is_kept_across_restarts(backend, tmp_path):
    settings = make_settings(tmp_path, backend.url)
    first, second = Store(settings), Store(settings)
    try:
        assert first.patient_hash("p") == second.patient_hash("p") != first.patient_hash("q")
    finally:
        first.close()
        second.close()


def test_record_cards_never_raises(backend, tmp_path):
    store = Store(make_settings(tmp_path, backend.url))
    try:
        store.save_issued_cards("h", "p", None, None)
        store.save_issued_cards("h", "p", ["not a card", {"no": "uuid"}], ["a", "b", "c"])
        store.save_issued_cards("h", None, [{"uuid": "u1", "source": {"topic": None}}], [])
        assert store.flush()
        assert [r["card_uuid"] for r in rows(store, database.issued_card)] == ["u1"]
    finally:
        store.close()
    store.save_issued_cards("h", "p", [{"uuid": "u2"}], ["r"])  # after close: logged, not raised


def test_cards_of_calls_close_together_are_written_in_one_transaction(
    backend, tmp_path, monkeypatch
):
    store = Store(make_settings(tmp_path, backend.url))
    writes = []
    original = store._write_cards
    monkeypatch.setattr(
        store, "_write_cards", lambda batch: (writes.append(len(batch)), original(batch))
    )
    try:
        for i in range(5):
            store.save_issued_cards(f"h{i}", "p", [{"uuid": f"u{i}"}], ["r"])
        assert store.flush()
        assert writes == [5]
        assert len(rows(store, database.issued_card)) == 5
    finally:
        store.close()


def test_a_busy_queue_is_written_without_waiting(backend, tmp_path, monkeypatch):
    """A backlog is written in full batches, one after the other (no half-second wait for
    more calls per batch): counted in transactions, not seconds, so a loaded machine cannot
    fail it; the time bound only catches a hang."""
    store = Store(make_settings(tmp_path, backend.url))
    writes = []
    original = store._write_cards
    monkeypatch.setattr(
        store, "_write_cards", lambda batch: (writes.append(len(batch)), original(batch))[1]
    )
    try:
        for i in range(2000):  # far more than one batch of calls
            store.save_issued_cards(f"h{i}", "p", [{"uuid": f"u{i}-a"}, {"uuid": f"u{i}-b"}], ["r"])
        started = time.monotonic()
        assert store.flush()
        assert time.monotonic() - started < 60.0
        assert len(rows(store, database.issued_card)) == 4000
        assert sum(writes) == 4000 and len(writes) <= 4000 // card_batches.BATCH_SIZE + 2
    finally:
        store.close()


def test_migrations_create_the_schema_the_store_queries(backend, tmp_path):
    settings = make_settings(tmp_path, backend.url)
    Store(settings).close()
    store = Store(settings)  # second start: nothing left to apply
    try:
        with store.engine.begin() as conn:
            assert migrations.migrate(conn) == []
            assert migrations.current_version(conn) == migrations.latest_version()
            inspector = inspect(conn)
            for table in database.metadata.tables.values():
                columns = {c["name"] for c in inspector.get_columns(table.name)}
                assert columns == set(table.columns.keys()), table.name
            uniques = inspector.get_unique_constraints("feedback")
            assert [sorted(u["column_names"]) for u in uniques] == [sorted(database.FEEDBACK_KEY)]
    finally:
        store.close()


# -- feedback ---------------------------------------------------------------------------


def test_feedback_round_trip_and_duplicates_stored_once(app, client):
    _, cards = call_hook(client)
    card = cards[0]
    store = store_of(app)
    assert store.flush()
    item = accepted(card)
    same_instant = dict(item, outcomeTimestamp="2026-11-24T11:00:00.000+01:00")
    for body in ({"feedback": [item]}, {"feedback": [item, item]}, {"feedback": [same_instant]}):
        response = client.post(FEEDBACK, json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
    later = overridden(card["uuid"], at="2026-11-24T10:30:00Z", comment="seen last week")
    assert client.post(FEEDBACK, json={"feedback": [later]}).status_code == 200

    stored = sorted(rows(store, database.feedback), key=lambda r: r["outcome_timestamp"])
    assert [(r["outcome"], r["outcome_timestamp"].isoformat()) for r in stored] == [
        ("accepted", "2026-11-24T10:00:00"),
        ("overridden", "2026-11-24T10:30:00"),
    ]
    first, second = stored
    assert first["card_uuid"] == second["card_uuid"] == card["uuid"]
    assert first["accepted_suggestions"] == [card["suggestions"][0]["uuid"]]
    assert first["unknown_card"] is False and second["unknown_card"] is False
    assert (second["override_reason_system"], second["override_reason_code"]) == (
        OVERRIDE_SYSTEM,
        "already-under-care",
    )
    assert second["user_comment"] == "seen last week"
    assert first["received_at"] is not None


def test_invalid_item_rejects_the_whole_batch(app, client):
    _, cards = call_hook(client)
    good = accepted(cards[0])
    bad = {
        "card": cards[0]["uuid"],
        "outcome": "ignored",
        "outcomeTimestamp": "2026-11-24T10:00:00Z",
    }
    response = client.post(FEEDBACK, json={"feedback": [good, bad]})
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"
    not_a_date = dict(good, outcomeTimestamp="2026-13-45T10:00:00Z")  # passes the pattern
    response = client.post(FEEDBACK, json={"feedback": [good, not_a_date]})
    assert response.status_code == 400
    assert rows(store_of(app), database.feedback) == []


def test_feedback_for_unknown_card_is_stored_and_flagged(app, client):
    stranger = str(uuid.uuid4())
    response = client.post(FEEDBACK, json={"feedback": [overridden(stranger, code=None)]})
    assert response.status_code == 200
    (row,) = rows(store_of(app), database.feedback)
    assert row["card_uuid"] == stranger and row["unknown_card"] is True
    assert row["override_reason_code"] is None


def test_feedback_before_its_card_is_written_loses_the_unknown_flag(backend, tmp_path):
    store = Store(make_settings(tmp_path, backend.url))
    try:
        store.save_feedback([overridden("card-x")])
        assert rows(store, database.feedback)[0]["unknown_card"] is True
        store.save_issued_cards(
            "h", "p", [{"uuid": "card-x", "source": {"topic": {"code": "nephrology"}}}], ["r1"]
        )
        assert store.flush()
        assert rows(store, database.feedback)[0]["unknown_card"] is False
    finally:
        store.close()


def test_concurrent_feedback_from_several_threads(app):
    card_ids = [str(uuid.uuid4()) for _ in range(20)]
    statuses: list[int] = []
    errors: list[BaseException] = []

    def post_all(worker: int) -> None:
        try:
            client = app.test_client()
            for _i, card_id in enumerate(card_ids):
                # Every thread posts every item (duplicates across threads) plus its own one.
                batch = [
                    overridden(card_id),
                    overridden(card_id, at=f"2026-11-24T12:{worker:02d}:00Z"),
                ]
                statuses.append(client.post(FEEDBACK, json={"feedback": batch}).status_code)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=post_all, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert statuses == [200] * (8 * len(card_ids))
    stored = rows(store_of(app), database.feedback)
    assert len(stored) == len(card_ids) * (1 + 8)
    keys = {(r["card_uuid"], r["outcome"], r["outcome_timestamp"]) for r in stored}
    assert len(keys) == len(stored)


# -- report -----------------------------------------------------------------------------


def run_cli(monkeypatch, settings: Settings, *argv: str) -> tuple[int, str]:
    monkeypatch.setenv("CDS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CDS_DATABASE_URL", settings.database_url.get_secret_value())
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


def test_report_counts_per_route_and_rule(app, client, settings, monkeypatch):
    calls = [call_hook(client) for _ in range(4)]
    cards = [c[1][0] for c in calls]  # the nephrology card of each call
    rule = expected_rules(settings, calls[0][0])["nephrology"]
    store = store_of(app)
    assert store.flush()
    feedback = [
        accepted(cards[0]),
        accepted(cards[1]),
        overridden(cards[1]["uuid"], code="patient-declined", at="2026-11-24T10:09:00Z"),
        overridden(cards[2]["uuid"], code="already-under-care"),
        overridden(cards[2]["uuid"], code="already-under-care", at="2026-11-24T10:06:00Z"),
        overridden(str(uuid.uuid4()), code="patient-declined"),  # a card we never issued
    ]
    for item in feedback:
        assert client.post(FEEDBACK, json={"feedback": [item]}).status_code == 200
    assert client.post(FEEDBACK, json={"feedback": [feedback[0]]}).status_code == 200  # repeat

    code, out = run_cli(monkeypatch, settings, "report", "--json")
    assert code == 0
    report = json.loads(out)
    nephrology = [r for r in report["rows"] if r["route"] == "nephrology"]
    # One outcome per card, the last: card 1 was accepted, then overridden (overridden).
    weekly = nephrology[0].pop("weekly")
    assert nephrology == [
        {
            "route": "nephrology",
            "rule": rule,
            "issued": 4,
            "accepted": 1,
            "overridden": 2,
            "suppressed": 0,
            "acceptance_rate": 0.25,
            "override_reasons": [
                {"system": OVERRIDE_SYSTEM, "code": "already-under-care", "cards": 1},
                {"system": OVERRIDE_SYSTEM, "code": "patient-declined", "cards": 1},
            ],
        }
    ]
    assert [(w["issued"], w["accepted"], w["overridden"]) for w in weekly] == [(4, 1, 2)]
    others = [r for r in report["rows"] if r["route"] != "nephrology"]
    assert all(
        r["issued"] == 4 and r["accepted"] == r["overridden"] == 0 and r["acceptance_rate"] == 0
        for r in others
    )
    assert report["totals"] == {
        "issued": 4 * len(calls[0][1]),
        "accepted": 1,
        "overridden": 2,
        "suppressed": 0,
    }
    assert report["feedback_for_unknown_cards"] == 1

    code, out = run_cli(monkeypatch, settings, "report", "--since", "2999-01-01", "--json")
    assert code == 0 and json.loads(out)["rows"] == []

    code, out = run_cli(monkeypatch, settings, "report")
    assert code == 0
    assert "nephrology" in out and "25%" in out and "already-under-care" in out


def test_report_rejects_a_bad_date(monkeypatch, settings, capsys):
    with pytest.raises(SystemExit):
        run_cli(monkeypatch, settings, "report", "--since", "yesterday")


# -- database down ----------------------------------------------------------------------


def test_database_down_hook_still_answers_and_feedback_gets_503(backend, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    settings = make_settings(tmp_path, backend.down_url)
    app = create_app(settings)  # start-up does not fail: the schema is created later
    store = store_of(app)
    client = app.test_client()
    try:
        request, cards = call_hook(client)  # 200 with the nephrology card
        started = time.perf_counter()
        store.save_issued_cards("h", "p", cards, ["r"] * len(cards))
        assert time.perf_counter() - started < 0.1  # only queued: no wait for the database

        response = client.post(FEEDBACK, json={"feedback": [accepted(cards[0])]})
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        body = response.get_json()
        assert body["resourceType"] == "OperationOutcome"

        assert store.flush()
        messages = [r.getMessage() for r in caplog.records]
        assert any("could not write" in m and "issued-card records" in m for m in messages)
        patient_id = request["context"]["patientId"]
        assert not any(patient_id in m or cards[0]["uuid"] in m for m in messages)
    finally:
        store.close()


def test_sqlite_database_that_comes_back_is_migrated_then(tmp_path):
    later = tmp_path / "later"
    store = Store(make_settings(tmp_path, f"sqlite:///{later / 'cds.sqlite3'}"))
    try:
        with pytest.raises(database.StoreUnavailable):
            store.save_feedback([overridden("c1")])
        later.mkdir()
        store.save_feedback([overridden("c1")])
        assert len(rows(store, database.feedback)) == 1
    finally:
        store.close()


def test_the_card_writer_starts_again_after_a_failed_thread_start(monkeypatch):
    """A thread that cannot be started (a thread or pid limit) is tried again on the next
    put, not taken for running while rows pile up until the queue is full (found in review)."""
    import threading

    from cds_service.storage import card_writer as card_writer_module

    written: list = []
    writer = card_writer_module.CardWriter(written.extend)
    real_start = threading.Thread.start
    starts = {"n": 0}

    def failing_once(self):
        starts["n"] += 1
        if starts["n"] == 1:
            raise RuntimeError("can't start new thread")
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", failing_once)
    monkeypatch.setattr(card_writer_module, "WRITE_DELAY", 0.01)
    with pytest.raises(RuntimeError):
        writer.put([{"row": 1}])
    writer.put([{"row": 2}])
    try:
        assert writer.flush(timeout=2.0)
        assert {"row": 2} in written
    finally:
        writer.close()
