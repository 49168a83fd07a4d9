"""Prometheus metrics: request latency per endpoint, cards per route, FHIR fetches, JWT rejections.

Under gunicorn the metrics are shared across workers with prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set up in ``gunicorn_conf``).
"""

from __future__ import annotations

import os

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               generate_latest)
from prometheus_client import multiprocess

REQUESTS = Histogram("cds_http_request_duration_seconds", "HTTP request latency",
                     ["endpoint", "method", "status"],
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
CARDS = Counter("cds_cards_issued_total", "Cards returned, by referral route", ["route"])
FHIR_FETCH = Histogram("cds_fhir_fetch_duration_seconds", "Time to fetch one missing prefetch key",
                       ["outcome"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5))
FHIR_FETCH_ERRORS = Counter("cds_fhir_fetch_errors_total", "Failed fetches of prefetch keys",
                            ["key"])
JWT_REJECTIONS = Counter("cds_jwt_rejections_total", "Requests refused by JWT verification",
                         ["reason"])


def exposition() -> tuple[bytes, str]:
    """The metrics text; aggregates all gunicorn workers when multiprocess mode is on."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
