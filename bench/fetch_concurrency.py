"""Show that missing prefetch keys are fetched in parallel: time ~ slowest query, not the sum.

Starts a local FHIR-like server where every query takes a fixed delay, then fetches N keys
with ``FhirFetcher`` (as a hook call does) and, for comparison, one key at a time. Also
counts TCP connections, to show that keep-alive connections are reused across calls.

    .venv/bin/python bench/fetch_concurrency.py --keys 6 --delay 0.2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cds_service.config import Settings  # noqa: E402
from cds_service.protocol.fhir_client import FhirFetcher  # noqa: E402

TOKEN = "bench-token"


def start_server(delay: float):
    """A threaded HTTP/1.1 keep-alive server answering every search after ``delay`` seconds.

    (Plain ``http.server``: werkzeug's development server closes every connection.)
    """
    clients: set[int] = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (40 ms)

        def do_GET(self):
            clients.add(self.client_address[1])
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.answer(401, {"resourceType": "OperationOutcome"})
            time.sleep(delay)
            rtype = urlsplit(self.path).path.rsplit("/", 1)[-1]
            self.answer(
                200,
                {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [{"resource": {"resourceType": rtype, "id": "1"}}],
                },
            )

        def answer(self, status: int, body: dict):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, clients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=6)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds per query")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    server, clients = start_server(args.delay)
    base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    settings = Settings.from_env(
        {}, allow_http_fhir=True, fhir_pool_size=args.keys, fhir_timeout=args.keys * args.delay + 5
    )
    fetcher = FhirFetcher(settings)
    queries = {f"key{i}": f"Type{i}?patient=p1" for i in range(args.keys)}
    try:
        for round_ in range(1, args.rounds + 1):
            started = time.perf_counter()
            results = fetcher(base, TOKEN, queries)
            parallel = time.perf_counter() - started
            assert all(isinstance(r, list) and len(r) == 1 for r in results.values()), results
            started = time.perf_counter()
            for key, url in queries.items():
                fetcher(base, TOKEN, {key: url})
            sequential = time.perf_counter() - started
            print(
                f"round {round_}: {args.keys} keys x {args.delay:.3f} s each: "
                f"concurrent {parallel:.3f} s (slowest query {args.delay:.3f} s), "
                f"one at a time {sequential:.3f} s (sum {args.keys * args.delay:.3f} s), "
                f"speed-up x{sequential / parallel:.1f}"
            )
        total = args.rounds * args.keys * 2
        print(f"{total} requests over {len(clients)} TCP connections (keep-alive reuse)")
    finally:
        fetcher.close()
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
