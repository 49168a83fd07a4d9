"""Alembic migrations on SQLite and PostgreSQL: fresh databases, databases made by the
hand-written steps Alembic replaced (adopted), and several processes starting together.

PostgreSQL runs use ``CDS_TEST_POSTGRES_URL`` (skipped when unset), as in test_storage.py.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    inspect,
    select,
    text,
)
from test_storage import _postgres_backend, make_settings

from cds_service.config import Settings
from cds_service.storage import Store, database, migrations
from cds_service.storage.database import make_engine

ISSUED = {
    "card_uuid": "card-1",
    "route": "nephrology",
    "rule_ids": "r1",
    "hook_instance": "h1",
    "patient_hash": "0" * 64,
    "issued_at": datetime(2026, 11, 24, 10, 0),
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def settings(request, tmp_path: Path):
    if request.param == "sqlite":
        yield make_settings(tmp_path, f"sqlite:///{tmp_path / 'cds.sqlite3'}")
    else:
        for backend in _postgres_backend():
            yield make_settings(tmp_path, backend.url)


@pytest.fixture
def engine(settings: Settings):
    engine = make_engine(settings)
    yield engine
    engine.dispose()


def schema_differences(conn: Connection) -> list:
    """What differs between the database and ``database.metadata`` (empty: they agree)."""
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return compare_metadata(context, database.metadata)


def legacy_migrate(conn: Connection, up_to: int) -> None:
    """The hand-written steps of ``cds_service.storage.migrations`` before Alembic, verbatim."""
    meta = MetaData()
    Table(
        "issued_card",
        meta,
        Column("card_uuid", String(128), primary_key=True),
        Column("route", String(64), nullable=False),
        Column("rule_ids", String(1024), nullable=False),
        Column("hook_instance", String(128), nullable=False),
        Column("patient_hash", String(64), nullable=False),
        Column("issued_at", DateTime, nullable=False),
        Index("ix_issued_card_issued_at", "issued_at"),
    )
    Table(
        "feedback",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("card_uuid", String(128), nullable=False),
        Column("outcome", String(16), nullable=False),
        Column("accepted_suggestions", JSON, nullable=True),
        Column("override_reason_system", String(1024), nullable=True),
        Column("override_reason_code", String(256), nullable=True),
        Column("user_comment", Text, nullable=True),
        Column("outcome_timestamp", DateTime, nullable=False),
        Column("received_at", DateTime, nullable=False),
        Column("unknown_card", Boolean, nullable=False),
        UniqueConstraint(
            "card_uuid", "outcome", "outcome_timestamp", name="uq_feedback_card_outcome_time"
        ),
    )
    step_2 = MetaData()
    Table(
        "jwt_replay",
        step_2,
        Column("token_key", String(64), primary_key=True),
        Column("expires_at", DateTime, nullable=False),
        Index("ix_jwt_replay_expires_at", "expires_at"),
    )
    versions = MetaData()
    schema_version = Table(
        "schema_version",
        versions,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("description", String(200), nullable=False),
        Column("applied_at", DateTime, nullable=False),
    )
    versions.create_all(conn)
    steps = [(1, "issued cards and feedback", meta), (2, "shared JWT replay cache", step_2)]
    for version, description, tables in steps[:up_to]:
        tables.create_all(conn)
        conn.execute(
            insert(schema_version).values(
                version=version, description=description, applied_at=datetime(2026, 11, 1)
            )
        )


def test_fresh_database_is_created_at_the_newest_revision(settings, engine):
    Store(settings).close()
    with engine.connect() as conn:
        assert migrations.current_version(conn) == migrations.latest_version()
        assert schema_differences(conn) == []
        assert "schema_version" not in inspect(conn).get_table_names()


@pytest.mark.parametrize("legacy_version", [1, 2])
def test_database_made_by_the_hand_written_steps_is_adopted(settings, engine, legacy_version):
    with engine.begin() as conn:
        legacy_migrate(conn, legacy_version)
        conn.execute(insert(database.issued_card).values(**ISSUED))

    store = Store(settings)
    try:
        with engine.connect() as conn:
            assert migrations.current_version(conn) == migrations.latest_version()
            assert "schema_version" not in inspect(conn).get_table_names()
            assert schema_differences(conn) == []
            kept = conn.execute(select(database.issued_card)).one()._mapping
            assert {k: v for k, v in kept.items() if k in ISSUED} == ISSUED
            assert kept["suppressed"] is False  # columns added by 0003 take their defaults
        # And the store works on it: feedback for the kept card, a JWT id.
        store.save_feedback(
            [{"card": "card-1", "outcome": "accepted", "outcomeTimestamp": "2026-11-24T10:05:00Z"}]
        )
        assert store.first_use("iss", "jti-1", 4102444800) is True
        with engine.connect() as conn:
            (row,) = conn.execute(select(database.feedback)).all()
            assert row.unknown_card is False
    finally:
        store.close()
    with engine.begin() as conn:  # a restart has nothing left to do
        assert migrations.migrate(conn) == []


def test_legacy_version_newer_than_known_is_refused(engine):
    with engine.begin() as conn:
        legacy_migrate(conn, 2)
        conn.execute(
            insert(Table("schema_version", MetaData(), autoload_with=conn)).values(
                version=3, description="from the future", applied_at=datetime(2026, 12, 1)
            )
        )
    with pytest.raises(RuntimeError, match="version 3"), engine.begin() as conn:
        migrations.migrate(conn)
    with engine.connect() as conn:  # untouched
        assert "schema_version" in inspect(conn).get_table_names()
        assert migrations.current_version(conn) is None


def test_workers_starting_together_migrate_once(settings, engine: Engine):
    workers = 6
    barrier = threading.Barrier(workers)
    applied: list[list[str]] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            barrier.wait(10)
            with engine.begin() as conn:
                applied.append(migrations.migrate(conn))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    # Daemon threads: without the lock they can block each other for good.
    threads = [threading.Thread(target=start, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "migrations blocked each other"
    assert not errors
    assert sorted(applied, key=len) == [[]] * (workers - 1) + [
        ["0001", "0002", "0003", "0004", "0005", "0006"]
    ]
    with engine.connect() as conn:
        assert migrations.current_version(conn) == migrations.latest_version()
        assert schema_differences(conn) == []


def test_head_constant_is_the_newest_revision():
    script = ScriptDirectory.from_config(migrations.alembic_config())
    assert script.get_heads() == [migrations.HEAD]


def test_database_at_an_unknown_newer_revision_is_left_alone(engine, caplog):
    with engine.begin() as conn:
        assert migrations.migrate(conn)
        conn.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    with engine.begin() as conn:
        assert migrations.migrate(conn) == []
    assert "newer than this release knows" in caplog.text


def test_revisions_ship_inside_the_package():
    location = Path(migrations.alembic_config().get_main_option("script_location"))
    assert location == Path(migrations.__file__).parent
    assert sorted(p.name for p in (location / "versions").glob("0*.py")) == [
        "0001_cards_and_feedback.py",
        "0002_jwt_replay.py",
        "0003_suppression.py",
        "0004_suppression_generation.py",
        "0005_card_and_feedback_client.py",
        "0006_suppression_per_client.py",
    ]


def test_cards_recorded_before_0005_keep_no_client_and_their_feedback_suppresses_nothing(
    settings, engine
):
    """Upgraded from 0004: a card recorded then has no client, so feedback on it is stored
    (never refused) but cannot start a suppression, whoever sends it; the same override on
    a card recorded with its client after the upgrade does."""
    from alembic import command

    ehr, system = "https://ehr.example.org", "urn:leg-cramp-cds:override-reason"
    issued_at = database.utcnow() - timedelta(minutes=5)
    old_card = {**ISSUED, "issued_at": issued_at, "fingerprint": "f", "indicator": "warning"}
    with engine.begin() as conn:
        command.upgrade(migrations.alembic_config(conn), "0004")
        conn.execute(insert(database.issued_card).values(**old_card))
    store = Store(settings)
    store.suppression_policy = {"nephrology": {(system, "patient-declined"): 90}}
    try:
        with engine.begin() as conn:
            assert migrations.current_version(conn) == migrations.HEAD
            assert schema_differences(conn) == []
            assert conn.execute(select(database.issued_card.c.client)).scalar_one() is None
            new_card = {**old_card, "card_uuid": "card-2", "patient_hash": "1" * 64, "client": ehr}
            conn.execute(insert(database.issued_card).values(**new_card))

        def override(card: str) -> dict:
            return {
                "card": card,
                "outcome": "overridden",
                "outcomeTimestamp": database.utcnow().isoformat() + "Z",
                "overrideReason": {"reason": {"system": system, "code": "patient-declined"}},
            }

        store.save_feedback([override("card-1"), override("card-2")], ehr)
        with engine.connect() as conn:
            stored = conn.execute(select(database.feedback)).all()
            assert {(r.card_uuid, r.unknown_card, r.client) for r in stored} == {
                ("card-1", False, ehr),
                ("card-2", False, ehr),
            }
            held = conn.execute(select(database.suppression.c.card_uuid)).scalars().all()
            assert held == ["card-2"]
    finally:
        store.close()


def suppression_row(client: str | None, route: str = "nephrology", minute: int = 0) -> dict:
    return {
        "patient_hash": "0" * 64,
        "route": route,
        "card_uuid": f"card-{client}-{route}-{minute}",
        "reason_code": "patient-declined",
        "fingerprint": None,
        "indicator": "warning",
        "suppressed_at": datetime(2026, 11, 24, 10, minute),
        "expires_at": datetime(2027, 2, 22, 10, 0),
        "client": client,
    }


def token(conn: Connection) -> str:
    return conn.execute(select(database.suppression_generation.c.token)).scalar_one()


def test_0006_keys_suppressions_by_client_and_keeps_the_change_token_moving(settings, engine):
    """Upgraded from 0005: the rows without a client (they applied to nobody) are dropped,
    the others kept; two clients then hold a suppression of the same patient and route,
    and every change still moves the token (SQLite's triggers are made again)."""
    from alembic import command

    a, b = "https://ehr-a.example.org", "https://ehr-b.example.org"
    with engine.begin() as conn:
        command.upgrade(migrations.alembic_config(conn), "0005")
        conn.execute(
            insert(database.suppression),
            [suppression_row(a), suppression_row(None, route="urgent-care")],
        )
        before = token(conn)
    with engine.begin() as conn:
        assert migrations.migrate(conn) == ["0006"]
    with engine.begin() as conn:
        assert schema_differences(conn) == []
        assert token(conn) != before  # a copy read before the upgrade is not trusted
        kept = conn.execute(select(database.suppression)).all()
        assert [(r.client, r.route) for r in kept] == [(a, "nephrology")]
        before = token(conn)
        conn.execute(insert(database.suppression).values(**suppression_row(b, minute=5)))
        assert token(conn) != before
        clients = conn.execute(select(database.suppression.c.client)).scalars().all()
        assert sorted(clients) == [a, b]
        with pytest.raises(Exception, match="(?i)null|not.null"):
            with conn.begin_nested():
                conn.execute(insert(database.suppression).values(**suppression_row(None)))


def test_0006_downgrades_to_the_latest_override_of_each_route(settings, engine):
    from alembic import command

    a, b = "https://ehr-a.example.org", "https://ehr-b.example.org"
    with engine.begin() as conn:
        migrations.migrate(conn)
        conn.execute(
            insert(database.suppression),
            [suppression_row(a, minute=1), suppression_row(b, minute=7)],
        )
    with engine.begin() as conn:
        command.downgrade(migrations.alembic_config(conn), "0005")
    with engine.begin() as conn:
        kept = conn.execute(text("SELECT client FROM suppression")).scalars().all()
        assert kept == [b]
        assert migrations.migrate(conn) == ["0006"]
        assert schema_differences(conn) == []
