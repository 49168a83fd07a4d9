"""Card records survive a database outage (issue 24): kept in an on-disk spool, written
once the store takes them, each card once; a shutdown or a process killed with -9 leaves
them for the next process; the spool is bounded and every drop is counted.

Unit tests drive the card writer against a fake store (down: refuses, or raises
OperationalError as SQLAlchemy does); the app tests use the real store on SQLite; the
gunicorn tests kill workers with -9 and (when ``CDS_TEST_POSTGRES_URL`` is set) stop
PostgreSQL for ten seconds under load. Waits are bounded and generous (a loaded 2-core box).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError

from cds_service import metrics
from cds_service.config import Settings
from cds_service.storage import Store, card_writer, database
from cds_service.storage import spool_files as spool
from cds_service.storage.card_writer import CardWriter
from cds_service.storage.spool import CardSpool
from cds_service.web.app import create_app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "fhir_examples" / "nephrology-egfr-22.json"
SERVICE = "/cds-services/leg-cramp-referral"
FEEDBACK = SERVICE + "/feedback"
SETTLE = 30.0  # seconds allowed for records to reach the store once it is back


def counter(metric) -> float:
    return metric._value.get()


def row(n: int | None = None) -> dict:
    """An issued-card row as issued.py makes it, with a field the spool knows nothing of."""
    return {
        "card_uuid": str(uuid.uuid4()),
        "route": "nephrology",
        "rule_ids": "ckd-stage-4-5",
        "hook_instance": f"hook-{n}",
        "patient_hash": "ab" * 32,
        "issued_at": datetime(2026, 11, 24, 10, 0, 0, 123456),
        "fingerprint": None,
        "indicator": "warning",
        "suppressed": False,
        "client": "https://ehr.example.org",
    }


class FakeStore:
    """Takes rows by card uuid (counting every write of a uuid); while ``down`` it refuses
    them, returning False as ``_write_cards`` does or raising as SQLAlchemy does."""

    def __init__(self, raises: bool = False):
        self.down = False
        self.raises = raises
        self.rows: dict[str, dict] = {}
        self.writes: Counter[str] = Counter()
        self.lock = threading.Lock()

    def write(self, rows: list[dict]) -> bool:
        if self.down:
            if self.raises:
                raise OperationalError("INSERT INTO issued_card", {}, Exception("refused"))
            return False
        with self.lock:
            for r in rows:
                if r["card_uuid"] not in self.rows:  # insert ... on conflict do nothing
                    self.rows[r["card_uuid"]] = r
                self.writes[r["card_uuid"]] += 1
        return True


def until(condition, bound: float = SETTLE, pause: float = 0.05) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(pause)
    return condition()


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(card_writer, "WRITE_DELAY", 0.02)
    monkeypatch.setattr(card_writer, "RETRY_FIRST", 0.05)
    monkeypatch.setattr(card_writer, "RETRY_MAX", 0.2)


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + spool.SUFFIX)) if directory.is_dir() else []


# -- the spool's lines ---------------------------------------------------------------------


def test_a_line_keeps_every_field_of_the_record():
    """Generic: a field added to the record (here ``client``) survives, datetimes too."""
    original = [row(1), {**row(2), "suppressed": True, "fingerprint": "f" * 64}]
    line = spool.encode(original)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert spool.decode(line) == original
    with pytest.raises(ValueError):
        spool.decode(b'{"not": "a list"}\n')


# -- the writer against a store that goes away ----------------------------------------------


@pytest.mark.parametrize("raises", [False, True], ids=["refused", "OperationalError"])
def test_records_put_while_the_store_is_down_are_written_once_when_it_is_back(
    tmp_path, fast_retries, raises
):
    store = FakeStore(raises=raises)
    store.down = True
    directory = tmp_path / "data" / "card-spool" / "db"
    writer = CardWriter(store.write, CardSpool(directory, 64 * 1024 * 1024))
    spooled, recorded = (
        counter(metrics.CARD_RECORDS_SPOOLED),
        counter(metrics.CARD_RECORDS_FROM_SPOOL),
    )
    put = []
    try:
        for n in range(300):
            rows = [row(n), row(n)]
            put += [r["card_uuid"] for r in rows]
            writer.put(rows)
        assert writer.flush(timeout=10)  # every row tried: refused, kept
        assert store.rows == {}
        assert until(lambda: counter(metrics.CARD_RECORDS_SPOOLED) - spooled == 600)
        assert sum(p.stat().st_size for p in spool_files(directory)) > 600 * 100  # on disk
        for n in range(100):  # calls keep coming during the outage
            rows = [row(n)]
            put += [r["card_uuid"] for r in rows]
            writer.put(rows)
        store.down = False
        assert until(lambda: len(store.rows) == len(put))
        assert sorted(store.rows) == sorted(put)
        assert set(store.writes.values()) == {1}  # each card written once
        assert store.rows[put[0]]["client"] == "https://ehr.example.org"
        assert isinstance(store.rows[put[0]]["issued_at"], datetime)
        assert until(lambda: counter(metrics.CARD_RECORDS_FROM_SPOOL) - recorded >= 600)
        assert until(lambda: not spool_files(directory))  # written: the files are removed
    finally:
        writer.close()


def test_a_shutdown_while_the_store_is_down_leaves_the_records_to_the_next_start(
    tmp_path, fast_retries, caplog
):
    store = FakeStore()
    store.down = True
    directory = tmp_path / "spool"
    first = CardWriter(store.write, CardSpool(directory, 64 * 1024 * 1024))
    put = []
    for n in range(50):
        rows = [row(n)]
        put += [r["card_uuid"] for r in rows]
        first.put(rows)
    first.close()  # tries once more, then leaves them on disk (fsync-ed)
    assert store.rows == {}
    assert spool_files(directory)
    assert "kept in the spool" in caplog.text
    store.down = False
    second = CardWriter(store.write, CardSpool(directory, 64 * 1024 * 1024))  # the next start
    try:
        assert until(lambda: len(store.rows) == len(put))
        assert sorted(store.rows) == sorted(put)
        assert until(lambda: not spool_files(directory))
    finally:
        second.close()


_KILLED = """
import os, signal, sys, uuid
from datetime import datetime
from pathlib import Path
from cds_service.storage.spool import CardSpool
spool = CardSpool(Path(sys.argv[1]), 64 * 1024 * 1024)
for n in range(int(sys.argv[2])):
    spool.append([{"card_uuid": f"killed-{n}", "issued_at": datetime(2026, 11, 24), "n": n}])
with open(next(Path(sys.argv[1]).glob("*.cards")), "ab") as torn:
    torn.write(b'[{"card_uuid": "torn-by-the-kill"')  # a line the kill cut short
print("spooled", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_with_minus_9_loses_nothing_it_had_spooled(tmp_path, fast_retries):
    """The records a killed process held are taken over by another process of the same
    database (its lock died with it); the line the kill cut short is skipped and counted."""
    directory = tmp_path / "spool"
    out = subprocess.run(
        [sys.executable, "-c", _KILLED, str(directory), "40"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == -signal.SIGKILL and out.stdout.strip() == "spooled", out.stderr
    dropped = counter(metrics.CARD_RECORDS_DROPPED)
    store = FakeStore()
    survivor = CardWriter(store.write, CardSpool(directory, 64 * 1024 * 1024))
    try:
        assert until(lambda: len(store.rows) == 40)
        assert sorted(store.rows) == sorted(f"killed-{n}" for n in range(40))
        assert until(lambda: counter(metrics.CARD_RECORDS_DROPPED) - dropped == 1)
        assert until(lambda: not spool_files(directory))
    finally:
        survivor.close()


def test_files_of_a_live_process_are_never_taken_over(tmp_path, fast_retries):
    directory = tmp_path / "spool"
    down = FakeStore()
    down.down = True
    owner = CardWriter(down.write, CardSpool(directory, 64 * 1024 * 1024))
    other_store = FakeStore()
    other = CardWriter(other_store.write, CardSpool(directory, 64 * 1024 * 1024))
    try:
        owner.put([row(1)])
        assert owner.flush(timeout=10)
        other.put([row(2)])
        assert other.flush(timeout=10)
        assert other._spool is not None and other._spool.adopt_orphans() == 0
        assert len(other_store.rows) == 1  # its own record only
    finally:
        owner.close()
        other.close()


def test_past_its_bound_the_spool_drops_and_counts_never_silently(tmp_path, fast_retries, caplog):
    store = FakeStore()
    store.down = True
    line = len(spool.encode([row(0)]))
    writer = CardWriter(store.write, CardSpool(tmp_path / "spool", max_bytes=line * 10))
    dropped = counter(metrics.CARD_RECORDS_DROPPED)
    put = []
    try:
        for n in range(25):
            rows = [row(n)]
            put += [r["card_uuid"] for r in rows]
            writer.put(rows)
        assert counter(metrics.CARD_RECORDS_DROPPED) - dropped == 15
        assert "issued-card records dropped: the card spool is full" in caplog.text
        store.down = False
        assert until(lambda: len(store.rows) == 10)
        assert sorted(store.rows) == sorted(put[:10])  # the first ten were kept
    finally:
        writer.close()


def test_a_spool_that_cannot_be_written_keeps_the_records_in_memory(tmp_path, fast_retries):
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # the spool directory would have to be inside a file
    store = FakeStore()
    writer = CardWriter(store.write, CardSpool(blocked / "card-spool" / "db", 1 << 20))
    try:
        put = []
        for n in range(20):
            rows = [row(n)]
            put += [r["card_uuid"] for r in rows]
            writer.put(rows)
        assert writer.flush(timeout=10)
        assert sorted(store.rows) == sorted(put)
    finally:
        writer.close()


def test_feedback_finds_a_record_waiting_in_another_process_spool(tmp_path, fast_retries):
    """``write_now``: the record of a card another worker on this host still holds (its
    store is slow or down) is written by the process that got the feedback."""
    directory = tmp_path / "spool"
    slow = FakeStore()
    slow.down = True
    issuing = CardWriter(slow.write, CardSpool(directory, 1 << 20))
    store = FakeStore()
    receiving = CardWriter(store.write, CardSpool(directory, 1 << 20))
    try:
        wanted, other = row(1), row(2)
        issuing.put([wanted, other])
        assert receiving.write_now([wanted["card_uuid"]])
        assert list(store.rows) == [wanted["card_uuid"]]
        assert receiving.write_now(["never-issued"])  # nothing to write: fine
    finally:
        issuing.close()
        receiving.close()


def full_spool_file(directory: Path, first: dict) -> None:
    """One spool file of ``FIND_BYTES``: ``first``'s line, then lines of other cards."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [spool.encode([first])]
    size = len(lines[0])
    while size < spool.FIND_BYTES:
        lines.append(spool.encode([row(len(lines))]))
        size += len(lines[-1])
    (directory / f"test-1-1{spool.SUFFIX}").write_bytes(b"".join(lines))


def test_a_feedback_post_of_invented_ids_reads_a_full_spool_once_not_once_per_id(tmp_path):
    """500 invented card ids against 16 MB of spool: one pass reading each line's card ids
    into a set lookup (~0.1 s of CPU here; a scan of the spool per id took ~9 s)."""
    directory = tmp_path / "spool"
    wanted = row(0)
    full_spool_file(directory, wanted)
    invented = [str(uuid.uuid4()) for _ in range(499)]
    started = time.thread_time()  # CPU of this thread: a loaded machine does not inflate it
    found = spool.find_records(directory, [wanted["card_uuid"], *invented])
    assert time.thread_time() - started < 2.0
    assert [r["card_uuid"] for r in found] == [wanted["card_uuid"]]
    assert found[0]["issued_at"] == wanted["issued_at"]


def test_one_lookup_in_the_spool_looks_for_the_first_fifty_cards_only(tmp_path):
    directory = tmp_path / "spool"
    wanted = row(0)
    full_spool_file(directory, wanted)
    invented = [str(uuid.uuid4()) for _ in range(spool.FIND_IDS)]
    assert spool.find_records(directory, [*invented, wanted["card_uuid"]]) == []
    found = spool.find_records(directory, [*invented[1:], wanted["card_uuid"]])
    assert [r["card_uuid"] for r in found] == [wanted["card_uuid"]]


def test_a_card_id_that_needs_escaping_is_found_as_written(tmp_path):
    directory = tmp_path / "spool"
    odd = {**row(0), "card_uuid": 'card "quoted" \\ é'}
    directory.mkdir()
    (directory / f"test-1-1{spool.SUFFIX}").write_bytes(spool.encode([row(1), odd]))
    assert spool.find_records(directory, [odd["card_uuid"]]) == [odd]


def test_a_record_the_database_refuses_is_set_apart_not_retried_for_ever(tmp_path, caplog):
    """A row the database refuses (here NOT NULL; on PostgreSQL a value too long) is dropped,
    counted and logged; the rows of its batch and every later one are written."""
    settings = Settings.from_env({}, today="2026-11-24", data_dir=tmp_path / "data")
    store = Store(settings)
    dropped = counter(metrics.CARD_RECORDS_DROPPED)
    try:
        good = [row(n) for n in range(5)]
        bad = {**row(99), "route": None}
        store._writer.put([*good[:2], bad, *good[2:3]])
        store._writer.put(good[3:])
        assert store.flush(timeout=10)
        with store.engine.connect() as conn:
            stored = set(conn.scalars(select(database.issued_card.c.card_uuid)))
        assert stored == {r["card_uuid"] for r in good}
        assert counter(metrics.CARD_RECORDS_DROPPED) - dropped == 1
        assert "1 issued-card records dropped: refused by the database" in caplog.text
        assert store._writer._spool is not None and not store._writer._spool.waiting()
    finally:
        store.close()


# -- the app on SQLite ----------------------------------------------------------------------


def hook_request(patient: str) -> dict:
    request = json.loads(EXAMPLE.read_text())
    return json.loads(json.dumps(request).replace(request["context"]["patientId"], patient))


def answered_cards(client, calls: int) -> list[str]:
    cards = []
    for n in range(calls):
        response = client.post(SERVICE, json=hook_request(f"patient-{n % 7}"))
        assert response.status_code == 200
        cards += [c["uuid"] for c in response.get_json()["cards"]]
    assert cards
    return cards


def recorded(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(database.issued_card.c.card_uuid)))
    except Exception:  # not there yet
        return []
    finally:
        engine.dispose()


def test_cards_answered_while_the_database_cannot_be_opened_are_recorded_once_it_can(
    tmp_path, fast_retries
):
    later = tmp_path / "later"  # the database's directory does not exist yet
    url = f"sqlite:///{later / 'cds.sqlite3'}"
    settings = Settings.from_env(
        {}, today="2026-11-24", data_dir=tmp_path / "data", database_url=url, auth_mode="off"
    )
    app = create_app(settings)
    store = app.extensions["cds_store"]
    try:
        cards = answered_cards(app.test_client(), 12)
        assert store.flush(timeout=10)  # tried: refused, kept
        assert recorded(url) == []
        later.mkdir()
        assert until(lambda: len(recorded(url)) == len(cards))
        assert sorted(recorded(url)) == sorted(cards)  # each answered card, once
    finally:
        store.close()


def test_an_override_applies_on_the_next_call_whichever_worker_holds_the_card(tmp_path):
    """Two workers of one host: the card's record still waits in the first one's spool
    when the override reaches the second; the very next call leaves the card out."""
    settings = Settings.from_env(
        {},
        today="2026-11-24",
        data_dir=tmp_path / "data",
        auth_mode="off",
        suppression_without_auth=True,
        patient_hash_salt="shared",
    )
    one, two = create_app(settings), create_app(settings)
    gate = threading.Event()
    try:
        first = one.extensions["cds_store"]
        second = two.extensions["cds_store"]
        second.wait()
        write = first.wait()._writer._write
        first._store._writer._write = lambda rows: (gate.wait(30), write(rows))[1]
        response = one.test_client().post(SERVICE, json=hook_request("p-held"))
        card = next(
            c for c in response.get_json()["cards"] if c["source"]["topic"]["code"] == "nephrology"
        )
        item = {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": datetime.now().astimezone().isoformat(),
            "overrideReason": {
                "reason": {
                    "system": "urn:leg-cramp-cds:override-reason",
                    "code": "already-under-care",
                }
            },
        }
        assert two.test_client().post(FEEDBACK, json={"feedback": [item]}).status_code == 200
        again = two.test_client().post(SERVICE, json=hook_request("p-held")).get_json()
        assert "nephrology" not in [c["source"]["topic"]["code"] for c in again["cards"]]
    finally:
        gate.set()
        one.extensions["cds_store"].close()
        two.extensions["cds_store"].close()


# -- gunicorn: workers killed with -9, PostgreSQL stopped under load -------------------------


def _post_hook(server, patient: str) -> list[str]:
    status, body, _ = server.request("POST", SERVICE, hook_request(patient), timeout=30)
    assert status == 200, body
    return [c["uuid"] for c in body["cards"]]


def test_an_override_applies_on_the_next_call_in_20_tries_of_20_under_gunicorn(tmp_path):
    """Issue 24 found 14 of 20 overrides not yet in effect on the next call (the card's
    record still queued in the worker that issued it). Two workers, a new connection per
    request (either worker may answer any of them): now every next call leaves it out."""
    from test_serving_faults import Gunicorn

    server = Gunicorn(tmp_path / "data", CDS_SUPPRESSION_WITHOUT_AUTH="true")
    try:
        for n in range(20):
            patient = f"override-{n}"
            status, body, _ = server.request("POST", SERVICE, hook_request(patient))
            assert status == 200
            card = next(c for c in body["cards"] if c["source"]["topic"]["code"] == "nephrology")
            reason = next(r for r in card["overrideReasons"] if r["code"] == "already-under-care")
            item = {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "overrideReason": {"reason": reason},
            }
            status, body, _ = server.request("POST", FEEDBACK, {"feedback": [item]})
            assert status == 200, body
            status, body, _ = server.request("POST", SERVICE, hook_request(patient))
            routes = [c["source"]["topic"]["code"] for c in body["cards"]]
            assert status == 200 and "nephrology" not in routes, f"try {n + 1}: {routes}"
    finally:
        server.stop()


def spooled_lines(root: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in root.rglob("*" + spool.SUFFIX))


def test_workers_killed_with_minus_9_lose_no_spooled_card(tmp_path):
    """Cards answered while the database cannot be opened wait in the workers' spools;
    both workers are killed with -9; their replacements write every one once it can."""
    from test_serving_faults import Gunicorn

    later = tmp_path / "later"
    url = f"sqlite:///{later / 'cds.sqlite3'}"
    server = Gunicorn(tmp_path / "data", CDS_DATABASE_URL=url)
    try:
        with ThreadPoolExecutor(4) as pool:
            answered = [
                c
                for cards in pool.map(lambda n: _post_hook(server, f"patient-{n % 5}"), range(40))
                for c in cards
            ]
        # Each call's records are spooled before its answer is sent (one line a call): all
        # 40 are on disk the moment the last answer arrives, whenever the kill comes.
        spool_root = tmp_path / "data" / spool.SPOOL_DIR
        assert spooled_lines(spool_root) == 40
        victims = server.workers()
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        assert until(lambda: len(set(server.workers()) - set(victims)) == 2, 20)
        later.mkdir()
        assert until(lambda: len(recorded(url)) >= len(answered), 60), (
            f"{len(recorded(url))} of {len(answered)} recorded"
        )
    finally:
        server.stop()
    stored = recorded(url)
    assert len(stored) == len(set(stored)) and sorted(stored) == sorted(answered)


def server_metric(server, name: str) -> float:
    from test_observability import metric

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    return metric(body, f"cds_card_records_{name}_total")


@pytest.mark.postgres
def test_postgres_stopped_for_ten_seconds_under_load_every_answered_card_is_recorded(tmp_path):
    url = os.environ.get("CDS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("CDS_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server)")
    from test_serving_faults import Gunicorn, TcpProxy

    parts = urlsplit(url)
    proxy = TcpProxy((parts.hostname, parts.port or 5432))
    where = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    proxied = url.replace(where, f"127.0.0.1:{proxy.port}", 1)
    answered: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                cards = _post_hook(server, f"pg-{worker}-{n % 9}")
            except Exception as exc:  # pragma: no cover - reported below
                with lock:
                    failures.append(repr(exc))
                continue
            with lock:
                answered.extend(cards)

    try:
        server = Gunicorn(tmp_path / "data", CDS_DATABASE_URL=proxied)
        try:
            warm_up = len(_post_hook(server, "warm-up"))  # a worker's first call loads rules
            threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(4)]
            for t in threads:
                t.start()
            time.sleep(2.0)
            with lock:
                before = len(answered)
            proxy.stop()
            time.sleep(10.0)
            with lock:
                during = len(answered) - before
            proxy.start()
            time.sleep(3.0)
            stop.set()
            for t in threads:
                t.join(timeout=30)
            assert not failures, failures[:3]
            assert during > 0
            wanted = set(answered)

            def stored() -> list[str]:
                engine = create_engine(url)
                try:
                    with engine.connect() as conn:
                        found = conn.execute(text("SELECT card_uuid FROM issued_card"))
                        return [r[0] for r in found if r[0] in wanted]
                finally:
                    engine.dispose()

            assert until(lambda: len(stored()) >= len(wanted), 60, pause=0.5)
            # Counted: every answered card written (the warm-up's too), those of the outage
            # first kept in the spool, then written from it.
            assert until(lambda: server_metric(server, "written") >= len(answered) + 1, 10)
            assert server_metric(server, "written") == len(answered) + warm_up
            spooled = server_metric(server, "spooled")
            assert spooled > 0 and server_metric(server, "recorded_from_spool") >= spooled
            assert server_metric(server, "dropped") == 0
            print(
                f"PostgreSQL down 10 s: {len(answered)} cards answered ({before} before, "
                f"{during} during the outage), all recorded"
            )
        finally:
            server.stop()
    finally:
        proxy.stop()
    final = stored()
    assert len(final) == len(set(final)) == len(answered) == len(wanted)


def test_the_writer_logs_no_patient_data(tmp_path, fast_retries, caplog):
    caplog.set_level(logging.INFO)
    store = FakeStore()
    store.down = True
    writer = CardWriter(store.write, CardSpool(tmp_path / "spool", 1 << 20))
    r = row(1)
    writer.put([r])
    assert writer.flush(timeout=10)
    store.down = False
    assert until(lambda: len(store.rows) == 1)
    writer.close()
    assert r["card_uuid"] not in caplog.text and r["patient_hash"] not in caplog.text
