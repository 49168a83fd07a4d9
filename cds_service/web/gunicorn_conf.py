"""gunicorn settings taken from the same CDS_* variables as the rest of the service.

Also sets up Prometheus multiprocess mode (one metrics directory shared by the workers,
wiped at start) and tunes the garbage collector of each worker for a request-heavy,
allocation-heavy workload (see ``post_worker_init``). ``bench/run.py`` serves the
service and its parse-only baseline with this same file, so both get identical settings.

A first run should talk plainly: gunicorn's own messages are JSON lines like the app's
(``cds_service.logs.gunicorn_logconfig``), and a listen address already taken stops the
start at once with one line naming ``CDS_PORT`` (``on_starting``) instead of gunicorn's
five retries and "Can't connect".
"""

import errno
import gc
import os
import shutil
import signal
import socket
import sys
import tempfile

from cds_service import logs
from cds_service.config import Settings

_settings = Settings.from_env()
bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
# gevent: every connection is a greenlet, so a slow or idle client (a header line every few
# seconds, a kept-alive connection) costs a few KiB, never a request thread, and a call
# waiting on a FHIR server (requests, made cooperative by gevent's monkey-patching in the
# worker) yields to the others. The hook itself is CPU-bound, so one greenlet runs at a
# time per worker, as with one thread. Measured against gthread in bench/NOTES.md
# ("Choosing the server"); GUNICORN_CMD_ARGS="--worker-class gthread --threads 2" restores
# the previous setup. Our subclass of gunicorn's gevent worker starts faster and sends each
# answer in one write (cds_service/web/gevent_worker.py); "--worker-class gevent" is the stock one.
worker_class = "cds_service.web.gevent_worker.GeventWorker"
worker_connections = 1000  # open connections per worker (slow, idle and active)
threads = 2  # used by gthread only
timeout = 30
keepalive = 5
accesslog = None  # the app writes its own JSON access line (logger cds_service.access)
loglevel = _settings.log_level.lower()
logconfig_dict = logs.gunicorn_logconfig(_settings.log_level)

# Prometheus multiprocess mode. The variable must be set before a worker imports
# prometheus_client (it picks its value class at import): here, in the master, it is.
_created_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _created_metrics_dir = tempfile.mkdtemp(prefix="cds-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _created_metrics_dir


def _wipe(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def _cannot_listen(host: str, port: int, error: OSError) -> str:
    """What to do about an address gunicorn could not listen on, in one line."""
    if error.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use: stop the program holding it, or set "
            f"CDS_PORT to a free port (e.g. CDS_PORT={port + 1} make run)"
        )
    if error.errno == errno.EACCES:
        return f"port {port} needs privileges to listen on: set CDS_PORT to a port above 1023"
    return f"cannot listen on {host}:{port} ({error.strerror}): check CDS_HOST and CDS_PORT"


def _check_listen_addresses(server) -> None:
    """Stop with one line when an address cannot be listened on (checked as gunicorn binds:
    SO_REUSEADDR, so a port in TIME_WAIT is not taken for busy). Sockets handed over by
    systemd or a re-executing master are not ours to check."""
    if os.environ.get("LISTEN_FDS") or os.environ.get("GUNICORN_FD"):
        return
    for address in server.cfg.address:
        if not isinstance(address, tuple):  # a unix socket path
            continue
        host, port = address[0], address[1]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                server.log.error(_cannot_listen(host, port, error))
                if _created_metrics_dir:
                    shutil.rmtree(_created_metrics_dir, ignore_errors=True)
                sys.exit(1)


def on_starting(server):
    """The listen address is usable; counters restart from zero with the server (stale
    worker files are removed)."""
    _check_listen_addresses(server)
    _wipe(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def post_worker_init(worker):
    """Move everything built at start-up (rules, schemas, FHIR models) out of the
    collector's sight, and collect the young generation less often: a hook request
    allocates tens of thousands of short-lived dicts, and full collections otherwise
    keep re-scanning the long-lived start-up objects.

    No ``gc.collect()`` before freezing: it walks every start-up object (0.1-0.2 s of the
    worker's start here) to free a few hundred cyclic leftovers (~100 KiB), which are
    simply frozen with the rest."""
    from cds_service.web import gc_policy, gunicorn_errors

    gunicorn_errors.install(worker)  # 400/414/431 ... from gunicorn as OperationOutcome JSON
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    gc_policy.enable()  # and the young generation once each answer is sent (gc_policy.py)


def post_fork(server, worker) -> None:
    """Quit on the first SIGINT or SIGQUIT only. Ctrl-C in a terminal reaches each worker
    twice (SIGINT from the terminal, SIGQUIT from the master); gunicorn's gevent worker
    starts a greenlet per signal that calls ``sys.exit``, and the second one, run while the
    interpreter is already exiting, printed a ``SystemExit`` traceback. Set here, before the
    worker installs its signal handlers (it takes ``handle_quit`` from the instance), so a
    worker still booting when Ctrl-C comes quits once too."""
    handle_quit = worker.handle_quit
    quitting: list[int] = []

    def quit_once(sig, frame):
        if not quitting:
            quitting.append(sig)
            handle_quit(sig, frame)

    worker.handle_quit = quit_once
    # Until the worker installs its handlers it has the master's, which only queue the
    # signal for a loop the worker never runs: it would be SIGKILLed after the graceful
    # timeout (30 s). Nothing is loaded yet, so it may simply end.
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, _exit_before_boot)


def _exit_before_boot(sig, frame):
    os._exit(0)


def child_exit(server, worker):
    from cds_service.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(server):
    if _created_metrics_dir:
        shutil.rmtree(_created_metrics_dir, ignore_errors=True)
