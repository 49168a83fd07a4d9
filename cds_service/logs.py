"""Structured logging: one JSON object per line on stderr.

``configure`` is called by ``create_app``; it installs a JSON formatter on the root logger
at ``CDS_LOG_LEVEL``. Every request produces one line from the ``cds_service.access``
logger (see ``access``). What those lines may hold is fixed here, so no patient data can
slip in: identifiers of the hook call and the service, HTTP status, duration, the routes
and rules that fired, and counts of resources by type. Never names, patient or user ids,
values or tokens.

Under gunicorn, its own messages (start, workers booting and exiting, signals) go through
the same formatter from the master's first line (``gunicorn_logconfig``, used by
``cds_service/web/gunicorn_conf.py``): one JSON object per line from every process, and no
``--- Logging error ---`` when a record has no process id (see ``configure``).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

ACCESS_LOGGER = "cds_service.access"
access_log = logging.getLogger(ACCESS_LOGGER)

# The only members an access line may carry (anything else given is dropped).
ACCESS_FIELDS = (
    "method",
    "endpoint",
    "service",
    "status",
    "duration_ms",
    "hookInstance",
    "routes",
    "rules",
    "cards",
    "resources",
    "resource_counts",
    "error",
)

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}`` as one compact JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            # Exception type only: messages and tracebacks may quote request data.
            line["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return orjson.dumps(line, default=str).decode()


def configure(level: str = "INFO", stream=None) -> logging.Handler:
    """Install the JSON handler on the root logger (replacing a JSON handler installed
    before, ours or gunicorn's from ``gunicorn_logconfig``)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cds_json", False) or isinstance(handler.formatter, JsonFormatter):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._cds_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # No line carries the caller's file and line, thread, process or multiprocessing name,
    # so records need not look them up (logging's documented optimisation flags): a
    # walk up the stack and gevent's patched current_thread() on every access line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Third-party request logs carry FHIR query URLs (patient ids) at DEBUG: keep them quiet.
    for noisy in ("urllib3", "requests"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Alembic announces each of its plugins at INFO on every migration run: seven lines of
    # noise on a first start; the migration itself is logged by cds_service.storage.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, root.level))
    # gunicorn's own lines go to this handler too: a handler of its own would format
    # "[%(process)d]", which is None from here on (a traceback per line, and the line lost).
    for name in GUNICORN_LOGGERS:
        gunicorn_log = logging.getLogger(name)
        for own in list(gunicorn_log.handlers):
            gunicorn_log.removeHandler(own)
        gunicorn_log.propagate = True
    return handler


GUNICORN_LOGGERS = ("gunicorn.error",)


def gunicorn_logconfig(level: str = "INFO") -> dict:
    """gunicorn's ``logconfig_dict``: its messages as JSON lines on stderr, through the root
    logger, from the master's first line on. Its access log stays off (the app writes its
    own access line)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
        },
    }


def access(fields: dict) -> None:
    """Emit the one line for a request; only the whitelisted ``ACCESS_FIELDS`` are kept."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    safe = {key: fields[key] for key in ACCESS_FIELDS if fields.get(key) is not None}
    access_log.info("request", extra=safe)
