"""Storage faults while running (issue 14): the store notices, answers 503, and recovers
without a restart; every acknowledged feedback item is stored, once, and every answered
card is recorded, once (issue 24: kept in the card spool meanwhile).

SQLite only (local files in a temporary directory); PostgreSQL stop/start is covered by the
fault suite elsewhere. "Read-only" uses ``chattr +i`` when root (root ignores file modes),
else ``chmod``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from cds_service import metrics
from cds_service.config import Settings
from cds_service.storage import Store, database, health
from cds_service.web.app import create_app

HOOK = "/cds-services/leg-cramp-referral"
FEEDBACK = HOOK + "/feedback"
NEPHROLOGY_EXAMPLE = (
    Path(__file__).resolve().parents[1] / "fhir_examples" / "nephrology-egfr-22.json"
)
RECOVERY_SECONDS = 10.0


def item() -> dict:
    return {
        "card": str(uuid.uuid4()),
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-24T10:00:00Z",
        "overrideReason": {"userComment": "fault test"},
    }


class Client:
    """Posts feedback and remembers which items were acknowledged (200)."""

    def __init__(self, app):
        self.http = app.test_client()
        self.acked: list[str] = []
        self.refused: list[str] = []

    def post(self, batch: list[dict] | None = None) -> int:
        batch = batch or [item()]
        response = self.http.post(FEEDBACK, json={"feedback": batch})
        assert response.status_code in (200, 503), response.get_data(as_text=True)
        assert response.mimetype == "application/json"
        if response.status_code == 200:
            assert response.get_json() == {"status": "stored", "items": len(batch)}
            self.acked += [i["card"] for i in batch]
        else:
            assert response.get_json()["resourceType"] == "OperationOutcome"
            assert response.headers["Retry-After"]
            self.refused += [i["card"] for i in batch]
        return response.status_code

    def until_ok(self) -> float:
        """Post until one is acknowledged; the seconds it took (fails after the bound)."""
        started = time.monotonic()
        while time.monotonic() - started < RECOVERY_SECONDS:
            if self.post() == 200:
                return time.monotonic() - started
            time.sleep(0.05)
        pytest.fail(f"feedback did not recover within {RECOVERY_SECONDS} s")

    def ready(self) -> int:
        response = self.http.get("/readyz")
        assert response.headers["Cache-Control"] == "no-store"
        return response.status_code


def stored_cards(db_file: Path) -> list[str]:
    engine = create_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(database.feedback.c.card_uuid)))
    finally:
        engine.dispose()


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def app(data_dir):
    # Every item here is for a card the store does not know: no cap on them in these tests.
    app = create_app(
        Settings.from_env(
            {},
            today="2026-11-24",
            data_dir=data_dir,
            auth_mode="off",
            unknown_feedback_per_client=100_000,
            unknown_feedback_total=100_000,
            feedback_per_client=100_000,
            feedback_without_auth=100_000,
        )
    )
    yield app
    app.extensions["cds_store"].close()


def _set_read_only(paths: list[Path], read_only: bool) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        flag = "+i" if read_only else "-i"
        subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)
    else:
        for path in paths:
            path.chmod(0o444 if read_only else 0o644)


def test_read_only_database_then_writable_recovers_without_restart(app, data_dir):
    client = Client(app)
    assert client.post() == 200 and client.ready() == 200
    db = data_dir / "cds.sqlite3"
    # The database and its WAL, not the -shm index SQLite maps into memory: with that one
    # immutable SQLite itself dies of SIGBUS (a crash no connection handling can prevent).
    files = [p for p in (db, data_dir / "cds.sqlite3-wal") if p.exists()]
    try:
        _set_read_only(files, True)
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot make the database read-only here: {exc}")
    try:
        statuses = [client.post() for _ in range(5)]
        if os.geteuid() == 0:  # chattr +i: nothing can be written
            assert statuses == [503] * 5
            assert client.ready() == 503
    finally:
        _set_read_only(files, False)
    assert client.until_ok() < RECOVERY_SECONDS
    assert client.ready() == 200
    for _ in range(5):
        assert client.post() == 200
    assert sorted(stored_cards(db)) == sorted(client.acked)


def test_data_directory_removed_while_running_is_503_never_200_then_lost(app, data_dir, caplog):
    client = Client(app)
    for _ in range(3):
        assert client.post() == 200
    before = list(client.acked)
    salt = app.extensions["cds_store"].patient_hash("p")  # loads the salt kept in the dir
    shutil.rmtree(data_dir)
    # The next write goes into the unlinked file: it must not be acknowledged.
    assert client.post() == 503
    assert any("no longer at its path" in r.getMessage() for r in caplog.records)
    assert client.until_ok() < RECOVERY_SECONDS  # the data dir is recreated, as at start-up
    for _ in range(5):
        assert client.post() == 200
    assert client.ready() == 200
    after = [card for card in client.acked if card not in before]
    assert sorted(stored_cards(data_dir / "cds.sqlite3")) == sorted(after)
    # The salt is written back, so workers started later hash patients the same way.
    assert (data_dir / "patient-hash-salt").exists()
    assert Store(app.extensions["cds_store"].settings).patient_hash("p") == salt


def test_readiness_reports_a_removed_data_directory_then_recovers(app, data_dir):
    client = Client(app)
    assert client.ready() == 200
    shutil.rmtree(data_dir)
    response = client.http.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"
    assert client.ready() == 200  # reopened (directory recreated) on the next check
    assert client.http.get("/healthz").status_code == 200  # liveness never depended on it


def test_retried_batches_are_stored_once(app, data_dir):
    client = Client(app)
    batch = [item() for _ in range(10)]
    assert client.post(batch) == 200
    assert client.post(batch) == 200  # a retry after a lost answer
    assert len(stored_cards(data_dir / "cds.sqlite3")) == 10


def test_wal_is_bounded_and_truncated(app, data_dir, monkeypatch):
    store = app.extensions["cds_store"]
    client = Client(app)
    with store.engine.connect() as conn:
        pragmas = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "wal_autocheckpoint", "journal_size_limit")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "wal_autocheckpoint": health.WAL_AUTOCHECKPOINT_PAGES,
        "journal_size_limit": health.JOURNAL_SIZE_LIMIT,
    }
    for _ in range(20):
        assert client.post([item() for _ in range(50)]) == 200
    wal = data_dir / "cds.sqlite3-wal"
    assert wal.stat().st_size > 0
    monkeypatch.setattr(health, "CHECKPOINT_INTERVAL", 0.0)
    assert client.post() == 200  # a write past the interval checkpoints (TRUNCATE)
    assert wal.stat().st_size == 0
    with store.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(database.feedback)).scalar()
    assert count == len(client.acked) == 1001


def test_readiness_is_503_while_the_database_cannot_be_reached(tmp_path):
    not_a_dir = tmp_path / "not-a-directory"
    not_a_dir.write_text("")
    app = create_app(
        Settings.from_env(
            {},
            today="2026-11-24",
            data_dir=tmp_path / "data",
            database_url=f"sqlite:///{not_a_dir / 'cds.sqlite3'}",
        )
    )
    try:
        client = app.test_client()
        response = client.get("/readyz")
        assert response.status_code == 503 and response.get_json()["status"] == "unavailable"
        assert client.get("/healthz").status_code == 200
    finally:
        app.extensions["cds_store"].close()


def test_cards_answered_while_the_database_is_read_only_are_recorded_once_writable(
    app, data_dir, monkeypatch
):
    """Issue 24: card records the store refuses wait in the on-disk spool and are written,
    each once, when the file is writable again: cards answered == cards recorded."""
    from cds_service.storage import card_writer

    monkeypatch.setattr(card_writer, "RETRY_MAX", 0.5)  # retry often: the test waits less
    http = app.test_client()
    store = app.extensions["cds_store"]
    request = json.loads(NEPHROLOGY_EXAMPLE.read_text())

    def answer() -> list[str]:
        response = http.post(HOOK, json=request)
        assert response.status_code == 200
        return [card["uuid"] for card in response.get_json()["cards"]]

    answered = answer()
    assert store.flush()
    db = data_dir / "cds.sqlite3"
    files = [p for p in (db, data_dir / "cds.sqlite3-wal") if p.exists()]
    try:
        _set_read_only(files, True)
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot make the database read-only here: {exc}")
    spooled = metrics.CARD_RECORDS_SPOOLED._value.get()
    try:
        for _ in range(10):
            answered += answer()
        assert store.flush()  # tried: refused (chattr +i), or written (chmod: root writes)
        if os.geteuid() == 0:
            assert metrics.CARD_RECORDS_SPOOLED._value.get() - spooled >= 10
    finally:
        _set_read_only(files, False)
    deadline = time.monotonic() + RECOVERY_SECONDS * 3
    while time.monotonic() < deadline and len(issued_cards(db)) < len(answered):
        time.sleep(0.1)
    recorded = issued_cards(db)
    assert len(recorded) == len(set(recorded)) and sorted(recorded) == sorted(answered)


def issued_cards(db_file: Path) -> list[str]:
    engine = create_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(database.issued_card.c.card_uuid)))
    finally:
        engine.dispose()
