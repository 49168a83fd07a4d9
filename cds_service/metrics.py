"""Prometheus metrics: request latency per endpoint, cards per route, FHIR fetches, JWT rejections.

Under gunicorn the metrics are shared across workers with prometheus-client's
multiprocess mode: ``gunicorn_conf`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory *before* any worker imports this module (the value class is chosen at import),
and ``GET /metrics`` on any worker sums every worker's files. Without that variable
(tests, ``cds-service serve``) the metrics live in this process's default registry.

Exposed (all prefixed ``cds_``):
  cds_http_request_duration_seconds{endpoint,method,status}  histogram (``_count`` = requests)
  cds_cards_issued_total{route}                              counter
  cds_fhir_fetch_duration_seconds{outcome}                   histogram
  cds_fhir_fetch_errors_total{key}                           counter
  cds_jwt_rejections_total{reason}                           counter
  cds_request_plain_decodes_total                            counter
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

    REQUESTS: Histogram
    CARDS: Counter
    FHIR_FETCH: Histogram
    FHIR_FETCH_ERRORS: Counter
    JWT_REJECTIONS: Counter
    PLAIN_DECODES: Counter

_NAMES = (
    "REQUESTS",
    "CARDS",
    "FHIR_FETCH",
    "FHIR_FETCH_ERRORS",
    "JWT_REJECTIONS",
    "PLAIN_DECODES",
)
_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """The metrics are made on first use (PEP 562): the first is counted after the first
    answer is sent, so importing prometheus-client (~25 ms) is off start-up's path."""
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _lock:
        if name not in globals():
            globals().update(_make())
    return globals()[name]


def _make() -> dict[str, Any]:
    from prometheus_client import Counter, Histogram, disable_created_metrics

    disable_created_metrics()  # same series in the test client as under gunicorn (multiprocess)
    return {
        "REQUESTS": Histogram(
            "cds_http_request_duration_seconds",
            "HTTP request latency",
            ["endpoint", "method", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        ),
        "CARDS": Counter("cds_cards_issued_total", "Cards returned, by referral route", ["route"]),
        "FHIR_FETCH": Histogram(
            "cds_fhir_fetch_duration_seconds",
            "Time to fetch one missing prefetch key",
            ["outcome"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
        ),
        "FHIR_FETCH_ERRORS": Counter(
            "cds_fhir_fetch_errors_total", "Failed fetches of prefetch keys", ["key"]
        ),
        "JWT_REJECTIONS": Counter(
            "cds_jwt_rejections_total", "Requests refused by JWT verification", ["reason"]
        ),
        # Correct but slower (an Encounter from _include, an odd shape): worth knowing when
        # an EHR's prefetch makes most calls take this path.
        "PLAIN_DECODES": Counter(
            "cds_request_plain_decodes_total",
            "Hook requests decoded as plain JSON: a resource type or shape the typed decoder lacks",
        ),
    }


def multiprocess_dir() -> str | None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    return path if path and os.path.isdir(path) else None


def exposition() -> tuple[bytes, str]:
    """The metrics text; aggregates all gunicorn workers when multiprocess mode is on."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    __getattr__("REQUESTS")  # this process's series exist (zero) even before any request
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Called by gunicorn when a worker exits (``child_exit`` hook)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
