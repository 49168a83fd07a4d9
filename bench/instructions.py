"""Instructions per hook call, counted by valgrind's callgrind: a cost that does not move
with the other work on the machine.

On this shared 2-CPU machine req/s and CPU time per call vary by 30 % or more between
runs minutes apart, so a 5 % change cannot be seen in them; instruction counts repeat to
within ~3 %. They are not time (the interpreter's loops run at another rate than orjson's),
so ``make bench`` stays the measure of the targets; this is for comparing two versions
of the code. Needs valgrind (``apt-get install valgrind``); about two minutes a run.

    python bench/instructions.py            # the service and the parse-only baseline
    python bench/instructions.py --sizes 200 --apps service

Each run calls the WSGI app in process (no HTTP server), with the gunicorn worker's
garbage-collection settings; only the calls themselves are counted (callgrind's
collection is switched on inside ``functools.reduce``, which nothing else here calls).
"""

from __future__ import annotations

import argparse
import functools
import gc
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALLS = {20: 40, 200: 20, 2000: 4}  # multiples of gc_policy.MIDDLE_EVERY where it matters
PATH = "/cds-services/leg-cramp-referral"


def _worker(app_name: str, size: int, calls: int) -> None:
    """Runs under valgrind: warm up, then make ``calls`` hook calls inside reduce()."""
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    os.environ.update(
        {
            "CDS_AUTH_MODE": "off",
            "CDS_DATA_DIR": tempfile.mkdtemp(prefix="cds-instructions-"),
            "CDS_TODAY": "2026-11-24",
            "CDS_LOG_LEVEL": "INFO",
        }
    )
    import logging

    import orjson
    from requests_gen import build_request

    if app_name == "service":
        from cds_service.web import gc_policy
        from cds_service.web.app import create_app

        app = create_app()
        gc_policy.enable()
    else:
        from baseline import app
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as gunicorn_conf.post_worker_init
    logging.getLogger().handlers[:] = [logging.StreamHandler(open(os.devnull, "w"))]
    body = orjson.dumps(build_request(size))

    def call(_previous, _i) -> None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": PATH,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        out = app(environ, lambda status, headers, exc_info=None: None)
        b"".join(out)
        out.close()

    for i in range(30):
        call(None, i)
    time.sleep(1.0)  # the card writer drains the warm-up's records first
    functools.reduce(call, range(calls), None)


def count(app_name: str, size: int) -> float:
    calls = CALLS.get(size, 10)
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=functools_reduce",
                f"--callgrind-out-file={tmp}/callgrind.out",
                sys.executable,
                __file__,
                "--worker",
                app_name,
                str(size),
                str(calls),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit("callgrind gave no count:\n" + out.stderr[-2000:])
    return int(found.group(1)) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--apps", nargs="+", default=["service", "baseline"])
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))
        return 0
    for size in args.sizes:
        counts = {app: count(app, size) for app in args.apps}
        line = ", ".join(f"{app} {n / 1e6:.2f}M" for app, n in counts.items())
        if "service" in counts and "baseline" in counts:
            line += f" (ratio {counts['service'] / counts['baseline']:.2f})"
        print(f"{size} resources: instructions per call: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
