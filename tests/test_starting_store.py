"""The starting store (issue 14, start-up): the hook's path never waits for the database,
and nothing issued or acknowledged while it opens is lost."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

from sqlalchemy import create_engine, select

from cds_service.config import Settings
from cds_service.storage import StartingStore, database


def settings(tmp_path, **overrides) -> Settings:
    return Settings.from_env({}, today="2026-11-24", data_dir=tmp_path / "data", **overrides)


def card(uuid: str) -> dict:
    return {"uuid": uuid, "indicator": "info", "source": {"topic": {"code": "route-a"}}}


def test_app_import_and_creation_leave_sqlalchemy_out(tmp_path):
    code = (
        "import sys\n"
        "from cds_service.web.app import create_app\n"
        "from cds_service.config import Settings\n"
        f"create_app(Settings.from_env({{}}, data_dir={str(tmp_path)!r}, auth_mode='off'))\n"
        "print('sqlalchemy' in sys.modules, 'alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_cards_issued_before_the_open_are_written_with_their_time(tmp_path):
    store = StartingStore(settings(tmp_path), open_delay=None)
    before = database.utcnow()
    store.save_issued_cards("hook-1", "patient-1", [card("c1")], ["r1"], ["fp"])
    assert store._store is None and not store._pending  # the open has started
    assert store._spool is not None and store._spool.waiting()  # kept on disk meanwhile
    assert store.flush()
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'cds.sqlite3'}")
    with engine.connect() as conn:
        rows = conn.execute(select(database.issued_card)).all()
    engine.dispose()
    assert [r.card_uuid for r in rows] == ["c1"]
    assert before <= rows[0].issued_at < before + timedelta(seconds=5)
    assert rows[0].patient_hash == store.patient_hash("patient-1")
    store.close()


def test_feedback_waits_for_the_open_and_readiness_follows_it(tmp_path):
    store = StartingStore(settings(tmp_path), open_delay=None)
    item = {"card": "c9", "outcome": "accepted", "outcomeTimestamp": "2026-11-24T10:00:00Z"}
    store.save_feedback([item])  # opens the store, then stores
    assert store.health() == (True, {"store": "ok"})
    store.close()


def test_no_database_file_means_no_suppression_and_no_wait(tmp_path):
    store = StartingStore(settings(tmp_path), open_delay=None)
    store.suppression_policy = {"route-a": {"patient-declined": 30}}
    assert store.active_suppressions("p1", ["route-a"]) == {}
    assert store._opener is None  # the lookup did not open the store
    store.close()


def test_policy_set_after_the_open_reaches_the_store(tmp_path):
    store = StartingStore(settings(tmp_path), open_delay=0.0)
    assert store.wait() is not None
    store.urgent_routes = {"route-u"}
    assert store._store.urgent_routes == {"route-u"}
    assert isinstance(store.clock(), datetime)  # anything else: the open store's
    store.close()


def test_a_store_that_cannot_open_refuses_feedback_and_is_not_ready(tmp_path):
    broken = settings(tmp_path, database_url="sqlite://user:pass@/a")  # passes the config check
    store = StartingStore(broken, open_delay=None)
    ready, checks = store.health()
    assert not ready and "ConfigError" in checks["store"]
    try:
        store.save_feedback([{"card": "c", "outcome": "accepted", "outcomeTimestamp": "x"}])
    except database.StoreUnavailable:
        pass
    else:
        raise AssertionError("feedback acknowledged without a store")
    store.close()


def test_other_attributes_are_set_on_the_open_store(tmp_path):
    store = StartingStore(settings(tmp_path), open_delay=None)
    fixed = datetime(2030, 1, 1)
    store.clock = lambda: fixed
    assert store._store is not None and store._store.clock() == fixed
    store.close()


def test_before_the_open_a_restart_reads_suppressions_from_the_sqlite_file(tmp_path):
    """A restart with a database already there: the first calls answer suppressions from
    the file (standard-library sqlite3) without waiting for the store, and give what the
    open store gives."""
    from test_suppression import NEPHROLOGY, cards_by_route, example, override, store_of

    from cds_service.web.app import create_app

    config = settings(tmp_path, suppression_without_auth=True)  # clients without a JWT
    first = create_app(config)
    card = cards_by_route(first.test_client(), example(NEPHROLOGY))["nephrology"]
    override(first.test_client(), store_of(first), card)
    patient = example(NEPHROLOGY)["context"]["patientId"]
    opened = store_of(first).wait()
    expected = opened.active_suppressions(patient, ["nephrology", "urgent-care"])
    assert set(expected) == {"nephrology"}
    policy = opened.suppression_policy
    store_of(first).close()

    restarted = StartingStore(config, open_delay=None)
    restarted.suppression_policy = policy
    assert restarted.active_suppressions(patient, ["nephrology", "urgent-care"]) == expected
    assert restarted.active_suppressions("someone-else", ["nephrology"]) == {}
    assert restarted._opener is None  # answered without opening the store
    restarted.close()


def test_a_file_without_the_tables_yet_means_no_suppression(tmp_path):
    import sqlite3

    config = settings(tmp_path)
    config.data_dir.mkdir(parents=True)
    sqlite3.connect(config.data_dir / "cds.sqlite3").close()  # empty: not migrated yet
    store = StartingStore(config, open_delay=None)
    store.suppression_policy = {"route-a": {"patient-declined": 30}}
    assert store.active_suppressions("p1", ["route-a"]) == {}
    assert store._opener is None
    store.close()


def _restart_with_a_suppression(tmp_path):
    from test_suppression import NEPHROLOGY, cards_by_route, example, override, store_of

    from cds_service.web.app import create_app

    config = settings(tmp_path, suppression_without_auth=True)  # clients without a JWT
    first = create_app(config)
    card = cards_by_route(first.test_client(), example(NEPHROLOGY))["nephrology"]
    override(first.test_client(), store_of(first), card)
    store_of(first).close()
    return config, example(NEPHROLOGY)


def test_a_restart_leaves_out_a_suppressed_card_without_waiting_for_the_store(
    tmp_path, monkeypatch
):
    from test_suppression import SERVICE

    from cds_service.web.app import create_app

    config, request = _restart_with_a_suppression(tmp_path)
    app = create_app(config)
    waits = []
    real_wait = StartingStore.wait
    monkeypatch.setattr(
        StartingStore, "wait", lambda self, *a, **k: waits.append(a) or real_wait(self, *a, **k)
    )
    response = app.test_client().post(SERVICE, json=request)
    topics = [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]
    assert response.status_code == 200 and "nephrology" not in topics
    # Compared without waiting for the store (the call itself starts opening it: it may
    # be open by now, on a fast machine).
    assert waits == []
    app.extensions["cds_store"].close()


def test_a_store_that_fails_to_open_never_turns_a_hook_call_into_an_error(tmp_path, monkeypatch):
    from test_suppression import SERVICE

    from cds_service.storage import store as store_module
    from cds_service.web.app import create_app

    config, request = _restart_with_a_suppression(tmp_path)

    def cannot_open(self, _settings):
        raise RuntimeError("schema newer than this release")

    monkeypatch.setattr(store_module.Store, "__init__", cannot_open)
    app = create_app(config)
    starting = app.extensions["cds_store"]
    starting.start()
    assert starting.wait(5) is None
    response = app.test_client().post(SERVICE, json=request)
    assert response.status_code == 200
    starting.close()


def test_card_records_a_store_that_cannot_open_never_writes_are_counted_dropped(tmp_path):
    """Never silently (issue 24): with no spool to keep them, records held in memory for an
    open that failed are counted in cds_card_records_dropped_total, at shutdown, and those
    arriving after the failure at once."""
    from cds_service import metrics

    broken = settings(tmp_path, database_url="sqlite://user:pass@/a")  # cannot open
    broken.data_dir.mkdir(parents=True)
    (broken.data_dir / "card-spool").write_text("")  # and the spool cannot be written
    store = StartingStore(broken, open_delay=None)
    before = metrics.CARD_RECORDS_DROPPED._value.get()
    store.save_issued_cards("hook-1", "patient-1", [card("c1"), card("c2")], ["r1", "r2"])
    assert store.wait(10) is None  # held for the open, which failed
    left_out = [{"card": card("c4"), "rules": "r", "fingerprint": None}]
    store.save_issued_cards("hook-2", "patient-1", [card("c3")], ["r"], None, left_out)
    assert metrics.CARD_RECORDS_DROPPED._value.get() - before == 2
    store.close()  # the two held for the open are never written
    assert metrics.CARD_RECORDS_DROPPED._value.get() - before == 4


def test_records_spooled_before_an_open_that_failed_are_written_by_the_next_start(
    tmp_path, monkeypatch
):
    """The records of calls answered before the open are on disk, not only in memory: an
    open that fails (a newer schema, say) or a process killed meanwhile loses none."""
    from cds_service.storage import store as store_module

    config = settings(tmp_path)
    real_init = store_module.Store.__init__

    def cannot_open(self, _settings):
        raise RuntimeError("schema newer than this release")

    monkeypatch.setattr(store_module.Store, "__init__", cannot_open)
    first = StartingStore(config, open_delay=None)
    first.save_issued_cards("hook-1", "patient-1", [card("c1"), card("c2")], ["r1", "r2"])
    assert first.wait(10) is None
    first.save_issued_cards("hook-2", "patient-1", [card("c3")], ["r3"])  # after the failure
    first.close()  # the records stay in the spool
    monkeypatch.setattr(store_module.Store, "__init__", real_init)
    restarted = StartingStore(config, open_delay=0.0)
    assert restarted.wait(10) is not None
    assert restarted.flush()
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'cds.sqlite3'}")
    with engine.connect() as conn:
        rows = conn.execute(select(database.issued_card)).all()
    engine.dispose()
    assert sorted(r.card_uuid for r in rows) == ["c1", "c2", "c3"]
    assert {r.patient_hash for r in rows} == {restarted.patient_hash("patient-1")}
    restarted.close()
