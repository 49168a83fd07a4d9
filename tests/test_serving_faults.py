"""Serving faults (issue 14): the real server (gunicorn as `make run` starts it) keeps
answering while clients are slow, FHIR servers hang, reset, drip or page forever, the disk
fills up, PostgreSQL goes away and a worker is killed. Loopback only, every wait bounded.

Timing limits hold on a loaded two-core machine (load 8-9 from other work): each sits far
below what the fault it guards against costs (a worker blocked by slow clients, fetches
queued one behind another, a call that waits for the socket timeout instead of
CDS_FHIR_TIMEOUT), not at the quiet-machine figure, which each test prints instead (hook p99
a few ms, a 412 at CDS_FHIR_TIMEOUT + a few ms). Checked beside 8 busy-looping processes.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import minimal_request

ROOT = Path(__file__).resolve().parents[1]
HOOK = "/cds-services/leg-cramp-referral"
FEEDBACK = HOOK + "/feedback"
FHIR_TIMEOUT = 5.0  # CDS_FHIR_TIMEOUT of the servers under test
# A prefetched hook call blocked behind fetching calls waits the 4.5 s left of the FHIR
# timeout (behind slow clients, longer); unblocked it takes a few ms, and up to 1.2 s on a
# machine at load 12 (measured beside 8 busy loops).
UNBLOCKED = 2.5
# A call that must fetch answers 412 at CDS_FHIR_TIMEOUT; a loaded machine may add a few
# seconds of scheduling, far less than queued fetches (32 x 2 s) or the client's 15 s.
LATE_412 = FHIR_TIMEOUT + 4.0
# `make bench` runs the slow-client and FHIR-server cases again with the quiet-machine
# targets (CDS_BENCH_TIMING=1): p99 and prefetched calls under 100 ms, 412s within
# CDS_FHIR_TIMEOUT + 0.5 s.
if os.environ.get("CDS_BENCH_TIMING") == "1":
    UNBLOCKED, LATE_412 = 0.100, FHIR_TIMEOUT + 0.5
START_LIMIT = 90.0  # seconds for gunicorn to answer with both workers booted
RECOVERY_LIMIT = 30.0  # seconds for feedback to be stored again once the fault is gone


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """gunicorn started as `make run` does, on a free loopback port; stopped by its pid."""

    def __init__(self, tmp: Path, **env):
        self.port = free_port()
        self.data = tmp
        full = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CDS_") and k != "PROMETHEUS_MULTIPROC_DIR"
        }
        full.update(
            {
                "CDS_PORT": str(self.port),
                "CDS_HOST": "127.0.0.1",
                "CDS_WORKERS": "2",
                "CDS_TODAY": "2026-11-24",
                "CDS_AUTH_MODE": "off",
                "CDS_DATA_DIR": str(tmp),
                "CDS_FHIR_TIMEOUT": str(FHIR_TIMEOUT),
                "CDS_LOG_LEVEL": "WARNING",
                # The load tests post feedback for invented cards faster than the caps allow.
                "CDS_UNKNOWN_FEEDBACK_PER_CLIENT": "1000000",
                "CDS_UNKNOWN_FEEDBACK_TOTAL": "1000000",
                "CDS_FEEDBACK_PER_CLIENT": "1000000",
                "CDS_FEEDBACK_WITHOUT_AUTH": "1000000",
            }
        )
        full.update(env)
        self.log = open(tmp.parent / f"gunicorn-{self.port}.log", "wb")
        gunicorn = Path(sys.executable).parent / "gunicorn"
        self.process = subprocess.Popen(
            [
                str(gunicorn),
                "-c",
                "python:cds_service.web.gunicorn_conf",
                "cds_service.web.app:create_app()",
            ],
            cwd=ROOT,
            env=full,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_LIMIT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if self.get("/healthz")[0] == 200 and len(self.workers()) == int(
                    full["CDS_WORKERS"]
                ):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        pytest.fail("gunicorn did not start: " + Path(self.log.name).read_text()[-2000:])

    def workers(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 10.0):
        """(status, parsed JSON body, seconds)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            started = time.perf_counter()
            data = json.dumps(body).encode() if body is not None else None
            conn.request(
                method,
                path,
                body=data,
                headers={"Content-Type": "application/json"} if data else {},
            )
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None, time.perf_counter() - started
        finally:
            conn.close()

    def get(self, path: str):
        return self.request("GET", path, timeout=2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    gunicorn = Gunicorn(tmp_path_factory.mktemp("serving") / "data", CDS_ALLOW_HTTP_FHIR="true")
    yield gunicorn
    gunicorn.stop()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def timed_calls(server: Gunicorn, n: int, pause: float = 0.02) -> list[float]:
    """n prefetched hook calls one after another; their round-trip seconds (all must be 200)."""
    times = []
    for _ in range(n):
        status, body, seconds = server.request("POST", HOOK, minimal_request())
        assert status == 200 and body == {"cards": []}
        times.append(seconds)
        time.sleep(pause)
    return times


# -- slow clients ------------------------------------------------------------------------


def test_slow_header_clients_cost_no_request_thread(server):
    """200 connections sending a header line every 2 s; ordinary calls are not held up by
    them (p99 well under the 2 s a blocked worker would cost; a few ms on a quiet machine)."""
    stop = threading.Event()
    sockets = []
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(f"POST {HOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        sockets.append(sock)

    def drip():
        n = 0
        while not stop.wait(2.0):
            n += 1
            for sock in sockets:
                try:
                    sock.sendall(f"X-Slow-{n}: {n}\r\n".encode())
                except OSError:
                    pass  # the server may close a client that took too long: its right

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        timed_calls(server, 5)  # warm-up
        times = timed_calls(server, 150)
    finally:
        stop.set()
        dripper.join(timeout=5)
        for sock in sockets:
            sock.close()
    print(f"slow headers: 200 open, hook p99 {p99(times) * 1000:.1f} ms")
    assert p99(times) < UNBLOCKED, (
        f"p99 {p99(times) * 1000:.1f} ms, median {statistics.median(times) * 1000:.1f} ms"
    )


# -- FHIR servers that misbehave ---------------------------------------------------------


class BadFhir:
    """One loopback FHIR server, its behaviour chosen by the first path segment:
    /hang (never answers), /reset (resets the connection), /drip (a byte every 0.2 s),
    /page (a searchset whose next link never ends)."""

    def __init__(self):
        self.release = threading.Event()
        self.connections = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.connections += 1
                mode = urlsplit(self.path).path.strip("/").split("/")[0]
                if mode == "hang":
                    outer.release.wait(30)
                    self.close_connection = True
                elif mode == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                elif mode == "drip":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    self.wfile.write(b'{"resourceType": "Bundle", "type": "searchset", "entry": [')
                    while not outer.release.wait(0.2):
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            break
                    self.close_connection = True
                else:  # page forever
                    parts = urlsplit(self.path)
                    segments = parts.path.strip("/").split("/")[1:]
                    time.sleep(0.05)  # a real server's page time; pages come one at a time
                    if len(segments) == 2 and not parts.query:  # a read: Patient/p1
                        body = {"resourceType": segments[0], "id": segments[1]}
                    else:
                        page = (
                            int(parts.query.rsplit("page=", 1)[1]) if "page=" in parts.query else 0
                        )
                        body = {
                            "resourceType": "Bundle",
                            "type": "searchset",
                            "entry": [],
                            "link": [
                                {
                                    "relation": "next",
                                    "url": f"http://127.0.0.1:"
                                    f"{outer.port}/page/{segments[0]}?page={page + 1}",
                                }
                            ],
                        }
                    data = json.dumps(body).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def base(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def bad_fhir():
    fhir = BadFhir()
    yield fhir
    fhir.close()


def fetching_request(fhir_server: str) -> dict:
    """A request whose prefetch is empty: every key must be fetched from ``fhir_server``."""
    request = minimal_request()
    request["prefetch"] = {}
    request["fhirServer"] = fhir_server
    return request


@pytest.mark.parametrize("mode, calls", [("hang", 32), ("reset", 32), ("drip", 32), ("page", 8)])
def test_misbehaving_fhir_server_under_concurrency(server, bad_fhir, mode, calls):
    """32 calls that must fetch each answer 412 at CDS_FHIR_TIMEOUT (``LATE_412`` allows for
    a loaded machine), together rather than one after another, and a prefetched call sent
    while they wait is not held up by them (``UNBLOCKED``).

    Paging forever costs real work (CDS_FHIR_MAX_PAGES pages of 5 keys, each fetched and
    parsed, 100 HTTP exchanges per call, with the fake server on the same CPUs), so that
    case runs 8 calls at once, not 32."""

    def fetching_call(_):
        return server.request("POST", HOOK, fetching_request(bad_fhir.base(mode)), timeout=15)

    timed_calls(server, 3)  # warm connections and caches
    with ThreadPoolExecutor(calls) as pool:
        started = time.monotonic()
        futures = [pool.submit(fetching_call, i) for i in range(calls)]
        time.sleep(0.5)  # they are all waiting now
        prefetched = timed_calls(server, 5, pause=0.05)
        results = [f.result() for f in futures]
        wall = time.monotonic() - started
    statuses = [status for status, _, _ in results]
    assert statuses == [412] * calls, statuses
    for _, body, _ in results:
        assert body["resourceType"] == "OperationOutcome"
    slowest = max(seconds for _, _, seconds in results)
    print(
        f"{mode}: {calls} calls, slowest 412 {slowest:.2f} s, prefetched max "
        f"{max(prefetched) * 1000:.1f} ms"
    )
    assert slowest < LATE_412, f"slowest 412 after {slowest:.2f} s"
    assert wall < LATE_412 + 1.0, f"{calls} calls took {wall:.2f} s together"
    assert max(prefetched) < UNBLOCKED, [round(t * 1000, 1) for t in prefetched]
    if mode in ("hang", "drip"):
        assert bad_fhir.connections >= calls  # they really did wait on the server


# -- feedback under storage and process faults --------------------------------------------


def feedback_item() -> dict:
    return {
        "card": str(uuid.uuid4()),
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-24T10:00:00Z",
        "overrideReason": {"userComment": "fault test"},
    }


class FeedbackClients:
    """Posts feedback; remembers what was acknowledged (200) and what was not."""

    def __init__(self, server: Gunicorn):
        self.server = server
        self.acked: list[str] = []
        self.unacked: list[str] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()

    def post(self, timeout: float = 10.0) -> int:
        batch = [feedback_item(), feedback_item()]
        try:
            status, body, _ = self.server.request(
                "POST", FEEDBACK, {"feedback": batch}, timeout=timeout
            )
        except (OSError, http.client.HTTPException):
            status, body = 0, None  # connection broken (a worker killed): not acknowledged
        with self.lock:
            self.statuses.append(status)
            if status == 200:
                assert body == {"status": "stored", "items": 2}
                self.acked += [i["card"] for i in batch]
            else:
                assert status in (0, 503), (status, body)
                if status == 503:
                    assert body["resourceType"] == "OperationOutcome"
                self.unacked += [i["card"] for i in batch]
        return status

    def until_ok(self, bound: float = 10.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < bound:
            if self.post(timeout=5) == 200:
                return time.monotonic() - started
            time.sleep(0.1)
        pytest.fail(f"feedback did not recover within {bound} s")


def assert_nothing_lost_or_doubled(stored: list[str], clients: FeedbackClients) -> None:
    assert len(stored) == len(set(stored)), "an item was stored twice"
    missing = set(clients.acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged items were lost"
    # Items not acknowledged may or may not be stored (the worker died after the commit);
    # nothing else may be there.
    assert set(stored) <= set(clients.acked) | set(clients.unacked)


def sqlite_cards(data_dir: Path) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(data_dir / "cds.sqlite3")
    try:
        return [row[0] for row in conn.execute("SELECT card_uuid FROM feedback")]
    finally:
        conn.close()


def test_worker_killed_under_load(tmp_path):
    """SIGKILL a worker while 8 clients post feedback and hook calls: the master replaces
    it, the other worker keeps answering, and every acknowledged item is stored once."""
    server = Gunicorn(tmp_path / "data")
    try:
        clients = FeedbackClients(server)
        stop = threading.Event()

        def load():
            while not stop.is_set():
                clients.post(timeout=10)

        threads = [threading.Thread(target=load, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(1.0)
        hook_times = timed_calls(server, 20)  # served by the survivor or the replacement
        deadline = time.monotonic() + START_LIMIT
        while time.monotonic() < deadline:
            workers = server.workers()
            if len(workers) == 2 and victim not in workers:
                break
            time.sleep(0.1)
        assert victim not in server.workers() and len(server.workers()) == 2
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=15)
        assert time.monotonic() - killed_at < START_LIMIT + 10
        assert max(hook_times) < 5.0  # the survivor answers (not the 10 s client timeout)
        ok_after = clients.statuses[-8:]
        assert all(s == 200 for s in ok_after), ok_after
        assert clients.statuses.count(0) <= 8  # only the calls in flight on the dead worker
    finally:
        server.stop()
    assert_nothing_lost_or_doubled(sqlite_cards(tmp_path / "data"), clients)


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a small tmpfs at ``path``; the reason when that is not possible."""
    if os.geteuid() != 0:
        return "a full disk needs a small tmpfs, and mounting one needs root"
    path.mkdir(parents=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return f"mount -t tmpfs failed: {result.stderr.strip()[:200]}"
    return None


def test_full_disk_then_space_freed(tmp_path):
    """The data directory's disk fills up: feedback answers 503 (never 200 then lost), and
    is stored again once space is freed, without a restart; nothing lost or doubled."""
    mount = tmp_path / "disk"
    reason = _mount_tmpfs(mount, "8m")
    if reason:
        pytest.skip(reason)
    try:
        server = Gunicorn(mount / "data")
        try:
            clients = FeedbackClients(server)
            for _ in range(20):
                assert clients.post() == 200
            filler = mount / "filler"
            # Unbuffered: the write that meets the full disk raises here, not at close.
            with open(filler, "wb", buffering=0) as f:  # fill every byte left
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
            statuses = [clients.post() for _ in range(40)]
            assert 503 in statuses, "a full disk never showed"
            filler.unlink()
            recovered = clients.until_ok(bound=RECOVERY_LIMIT)
            for _ in range(20):
                assert clients.post() == 200
            assert recovered < RECOVERY_LIMIT
        finally:
            server.stop()
        stored = sqlite_cards(mount / "data")
        assert_nothing_lost_or_doubled(stored, clients)
        wal = mount / "data" / "cds.sqlite3-wal"
        assert not wal.exists() or wal.stat().st_size < 4 * 1024 * 1024
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


class TcpProxy:
    """A loopback TCP proxy in front of PostgreSQL: ``stop`` closes every connection and
    refuses new ones, as a stopped server does; ``start`` accepts again."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.close()
        self.pairs: list[socket.socket] = []
        self.lock = threading.Lock()
        self.server = None
        self.start()

    def start(self):
        self.server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.server.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._accept, args=(self.server,), daemon=True)
        self.thread.start()

    def _accept(self, server):
        while self.running:
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        a.settimeout(None)
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.running = False
        self.thread.join(timeout=2)
        self.server.close()
        with self.lock:
            for s in self.pairs:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.pairs = []


@pytest.mark.postgres
def test_postgres_stopped_and_restarted(tmp_path):
    """PostgreSQL goes away for 3 s: feedback answers 503 meanwhile (never 200 then lost),
    and recovers within seconds of PostgreSQL coming back, without a restart."""
    url = os.environ.get("CDS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("CDS_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server)")
    parts = urlsplit(url)
    proxy = TcpProxy((parts.hostname, parts.port or 5432))
    proxied = url.replace(
        f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname,
        f"127.0.0.1:{proxy.port}",
        1,
    )
    try:
        server = Gunicorn(tmp_path / "data", CDS_DATABASE_URL=proxied)
        try:
            clients = FeedbackClients(server)
            for _ in range(10):
                assert clients.post() == 200
            proxy.stop()
            down_until = time.monotonic() + 3
            while time.monotonic() < down_until:
                clients.post(timeout=10)
                time.sleep(0.1)
            assert 503 in clients.statuses
            proxy.start()
            assert clients.until_ok(bound=RECOVERY_LIMIT) < RECOVERY_LIMIT
            for _ in range(10):
                assert clients.post() == 200
        finally:
            server.stop()
    finally:
        proxy.stop()
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            wanted = set(clients.acked) | set(clients.unacked)
            stored = [
                row[0]
                for row in conn.execute(text("SELECT card_uuid FROM feedback"))
                if row[0] in wanted
            ]
    finally:
        engine.dispose()
    assert_nothing_lost_or_doubled(stored, clients)
