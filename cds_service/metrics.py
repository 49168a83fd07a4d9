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
  cds_card_records_written_total                             counter
  cds_card_records_spooled_total                             counter
  cds_card_records_recorded_from_spool_total                 counter
  cds_card_records_dropped_total                             counter

Every label value comes from a closed set, so no request can add a series: methods outside
``METHODS``, paths that are not one of the app's route templates (``known_endpoints``) and
statuses outside the HTTP registry are ``other`` (or ``4xx``-style classes); labels fed from
configuration (routes, prefetch keys, JWT rejection reasons) keep at most ``MAX_VALUES``
values each, later ones are ``other``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

    REQUESTS: Histogram
    CARDS: Counter
    FHIR_FETCH: Histogram
    FHIR_FETCH_ERRORS: Counter
    JWT_REJECTIONS: Counter
    PLAIN_DECODES: Counter
    CARD_RECORDS_WRITTEN: Counter
    CARD_RECORDS_SPOOLED: Counter
    CARD_RECORDS_FROM_SPOOL: Counter
    CARD_RECORDS_DROPPED: Counter

_NAMES = (
    "REQUESTS",
    "CARDS",
    "FHIR_FETCH",
    "FHIR_FETCH_ERRORS",
    "JWT_REJECTIONS",
    "PLAIN_DECODES",
    "CARD_RECORDS_WRITTEN",
    "CARD_RECORDS_SPOOLED",
    "CARD_RECORDS_FROM_SPOOL",
    "CARD_RECORDS_DROPPED",
)
_lock = threading.Lock()

OTHER = "other"  # the label value of everything outside a label's closed set
METHODS = frozenset({"GET", "POST", "OPTIONS", "HEAD", "PUT", "DELETE", "PATCH"})
MAX_VALUES = 64  # values a configuration-fed label keeps (a few routes, keys or reasons)
_STATUSES = frozenset(int(s) for s in HTTPStatus)
_endpoints: set[str] = set()  # the route templates of the apps made in this process


def known_endpoints(templates: Iterable[str]) -> None:
    """The app's route templates (``/cds-services/<service_id>`` ...): the endpoint
    label's closed set. Anything else (an unmatched path) is counted as ``other``."""
    _endpoints.update(templates)


def endpoint_label(endpoint: str) -> str:
    return endpoint if endpoint in _endpoints else OTHER


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def status_label(status: str) -> str:
    """A registered HTTP status as itself, another in 100-599 as its class (``4xx``)."""
    code = int(status) if status.isdigit() and len(status) == 3 else 0
    if code in _STATUSES:
        return str(code)
    return f"{code // 100}xx" if 100 <= code <= 599 else OTHER


def capped(limit: int = MAX_VALUES) -> Callable[[str], str]:
    """A label rule that keeps the first ``limit`` values it sees; later ones are ``other``
    (for labels fed by configuration, never by a request)."""
    seen: set[str] = set()
    guard = threading.Lock()

    def rule(value: str) -> str:
        if value in seen:
            return value
        with guard:
            if len(seen) >= limit:
                return OTHER
            seen.add(value)
        return value

    return rule


def one_of(*values: str) -> Callable[[str], str]:
    allowed = frozenset(values)
    return lambda value: value if value in allowed else OTHER


class ClosedLabels:
    """Mixin for a labelled metric: each value passes its label's rule before the series
    is chosen, so the set of series stays closed whatever the callers pass."""

    label_rules: tuple[Callable[[str], str], ...] = ()

    def labels(self: Any, *labelvalues: Any, **labelkwargs: Any) -> Any:
        if labelkwargs:
            labelvalues = tuple(labelkwargs[name] for name in self._labelnames)
        rules = self.label_rules
        return super().labels(  # type: ignore[misc]
            *(rule(str(value)) for rule, value in zip(rules, labelvalues, strict=True))
        )


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

    class ClosedCounter(ClosedLabels, Counter):
        pass

    class ClosedHistogram(ClosedLabels, Histogram):
        pass

    def closed(metric: Any, *rules: Callable[[str], str]) -> Any:
        metric.label_rules = rules
        return metric

    disable_created_metrics()  # same series in the test client as under gunicorn (multiprocess)
    return {
        "REQUESTS": closed(
            ClosedHistogram(
                "cds_http_request_duration_seconds",
                "HTTP request latency",
                ["endpoint", "method", "status"],
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            ),
            endpoint_label,
            method_label,
            status_label,
        ),
        "CARDS": closed(
            ClosedCounter("cds_cards_issued_total", "Cards returned, by referral route", ["route"]),
            capped(),
        ),
        "FHIR_FETCH": closed(
            ClosedHistogram(
                "cds_fhir_fetch_duration_seconds",
                "Time to fetch one missing prefetch key",
                ["outcome"],
                buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
            ),
            one_of("ok", "error"),
        ),
        "FHIR_FETCH_ERRORS": closed(
            ClosedCounter(
                "cds_fhir_fetch_errors_total", "Failed fetches of prefetch keys", ["key"]
            ),
            capped(),
        ),
        "JWT_REJECTIONS": closed(
            ClosedCounter(
                "cds_jwt_rejections_total", "Requests refused by JWT verification", ["reason"]
            ),
            capped(),
        ),
        # Correct but slower (an Encounter from _include, an odd shape): worth knowing when
        # an EHR's prefetch makes most calls take this path.
        "PLAIN_DECODES": Counter(
            "cds_request_plain_decodes_total",
            "Hook requests decoded as plain JSON: a resource type or shape the typed decoder lacks",
        ),
        **_card_record_counters(Counter),
    }


def _card_record_counters(counter: Any) -> dict[str, Any]:
    """Issued-card records (storage/card_writer.py): written, kept on disk while the store
    could not take them, written from there later, or lost (spool full, refused)."""
    return {
        "CARD_RECORDS_WRITTEN": counter(
            "cds_card_records_written_total", "Issued-card records written to the store"
        ),
        "CARD_RECORDS_SPOOLED": counter(
            "cds_card_records_spooled_total",
            "Issued-card records the store could not take at once, kept in the on-disk spool",
        ),
        "CARD_RECORDS_FROM_SPOOL": counter(
            "cds_card_records_recorded_from_spool_total",
            "Issued-card records written from the spool after a failed write, or left there "
            "by a process that ended",
        ),
        "CARD_RECORDS_DROPPED": counter(
            "cds_card_records_dropped_total",
            "Issued-card records lost: the spool was full or unwritable, or a line unreadable",
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
