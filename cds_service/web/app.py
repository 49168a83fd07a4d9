"""HTTP layer: the CDS Hooks endpoints, errors as OperationOutcome, CORS.

Everything clinical happens in ``service.CdsService``; this module only turns HTTP into
calls on it and answers in the shapes the CDS Hooks spec asks for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from cds_service import logs, metrics, storage
from cds_service.config import Settings
from cds_service.errors import (
    CdsError,
    HttpError,
    InvalidRequest,
    NotFound,
    Unavailable,
    UnsupportedMediaType,
)
from cds_service.protocol import egress, feedback, fhir_json, services
from cds_service.service import CdsService
from cds_service.web import cors, gc_policy
from cds_service.web.access import access_line, note_request
from cds_service.web.http_errors import from_http_exception, operation_outcome, status_of
from cds_service.web.http_guard import BODY, BODY_ERROR, ORIGINAL_PATH, HttpGuard
from cds_service.web.pages import admin_report_page, explain_pages
from cds_service.web.security import Authenticator
from cds_service.web.timing import PHASES, STARTED, ServerTiming

__all__ = ["ServerTiming", "create_app"]  # bench/baseline.py times its app the same way

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "application/fhir+json")
T = TypeVar("T")


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, mimetype="application/json")


def error_response(error: CdsError) -> Response:
    status = status_of(error)
    return json_response(
        operation_outcome(status, error.message, error.diagnostics), status, error.headers
    )


def read_json(decode: Callable[[bytes], T] = orjson.loads) -> T:
    """The request body as JSON, after the size and content-type checks: the bytes HttpGuard
    read (it answered 413 above CDS_MAX_BODY_BYTES), as they are; werkzeug's stream only for
    a body HttpGuard did not buffer (none sent)."""
    mimetype = (request.mimetype or "").lower()
    if mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("Content-Type must be application/json.")
    data = request.environ.get(BODY)
    if data is None:
        data = request.get_data(cache=False)  # 413 above MAX_CONTENT_LENGTH, as HttpGuard
    try:
        return decode(data)
    except orjson.JSONDecodeError:
        raise InvalidRequest("Request body is not valid JSON.") from None


def create_app(
    settings: Settings | None = None,
    service: CdsService | None = None,
    store: storage.AnyStore | None = None,
) -> Flask:
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level)
    service = service or CdsService(settings)
    # The database opens off the first answer's path (cds_service/storage/starting.py).
    store = store or storage.StartingStore(settings)
    authenticator = Authenticator(settings, replay_store=store)
    # Which override reasons suppress which route's card, from the rule files (none when
    # suppression is not allowed: Settings.suppression_allowed).
    _say_whether_feedback_suppresses(settings)
    store.suppression_policy = getattr(service, "suppression_policy", {})
    store.urgent_routes = getattr(service, "urgent_routes", set())

    app = Flask(__name__)
    # Never answer a redirect built from the Host header (``//x`` -> 308 to ``http://host/x``);
    # HttpGuard merges slashes before routing instead.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["cds"] = service
    app.extensions["cds_store"] = store
    cors.install(app, settings)  # for the sandbox (browsers); EHRs send no Origin

    def authenticate() -> None:
        # The JWT's aud names the URL as called (before HttpGuard normalised the path).
        claims = authenticator.authenticate(
            request.headers.get("Authorization"), request.environ.get(ORIGINAL_PATH, request.path)
        )
        g.client = feedback.client_of(claims)  # cards and feedback are bound to it
        # The fhirServer origins this call may fetch from: its verified issuer's list.
        egress.CALLER_ISSUER.set(claims.get("iss") if claims else None)

    app.wsgi_app = ServerTiming(HttpGuard(app.wsgi_app, settings.max_body_bytes))

    _observe_every_request(app)
    _operations_endpoints(app, settings, store, service.services)
    _cds_endpoints(app, service, store, authenticate)
    explain_pages(app, settings, service)
    admin_report_page(app, settings, store)
    # The endpoint label's closed set: these route templates; any other path is "other".
    metrics.known_endpoints(rule.rule for rule in app.url_map.iter_rules())
    return app


def _say_whether_feedback_suppresses(settings: Settings) -> None:
    """Once at start-up: without authentication, say whether overrides suppress cards."""
    if settings.auth_mode != "off":
        return
    if settings.suppression_without_auth:
        log.warning(
            "CDS_SUPPRESSION_WITHOUT_AUTH=true: any caller's feedback can suppress cards "
            "(CDS_AUTH_MODE=off; development only)"
        )
    else:
        log.warning(
            "CDS_AUTH_MODE=off: feedback is stored but suppresses no card "
            "(CDS_SUPPRESSION_WITHOUT_AUTH=true allows it, for development only)"
        )


def _observe_every_request(app: Flask) -> None:
    """Body errors answered in the app, bookkeeping after the response, errors as
    OperationOutcome."""

    @app.before_request
    def _body_problem():
        """A body HttpGuard could not accept (over the limit, malformed): answer it here, so
        the error gets CORS headers, metrics and an access line like any other."""
        problem = request.environ.get(BODY_ERROR)
        if problem is not None:
            status, message = problem
            g.error = "body"
            raise HttpError(status, message)

    @app.after_request
    def _observe(response: Response):
        """Measure now; count, log and record once the response is sent (``call_on_close``),
        so the bookkeeping does not delay the answer to the EHR."""
        environ = request.environ
        elapsed = time.perf_counter() - environ.get(STARTED, time.perf_counter())
        rule = request.url_rule
        endpoint = rule.rule if rule else "unmatched"
        method, status = request.method, response.status_code
        state = g._get_current_object()  # what the view noted (outcome, hookInstance, error)

        def bookkeeping() -> None:
            labels = (endpoint, method, str(status))
            tasks = [lambda: metrics.REQUESTS.labels(*labels).observe(elapsed)]
            if endpoint not in ("/metrics", "/healthz", "/readyz"):
                tasks.append(
                    lambda: logs.access(access_line(state, method, endpoint, status, elapsed))
                )
            _run_each([*tasks, *state.get("after_sent", ())])
            tasks.clear()
            _forget_call(state)
            gc_policy.after_response()

        response.call_on_close(bookkeeping)
        return response

    @app.errorhandler(CdsError)
    def _cds_error(error: CdsError):
        return error_response(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        return error_response(from_http_exception(error))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        g.error = type(error).__name__
        log.error(
            "unexpected %s while handling %s %s",
            type(error).__name__,
            request.method,
            request.url_rule.rule if request.url_rule else "?",
        )
        return error_response(HttpError(500, "Internal error."))


# What a hook call keeps on ``g`` for the bookkeeping: its request, outcome and card records.
CALL_STATE = ("outcome", "request_payload", "after_sent")


def _forget_call(state) -> None:
    """Free the call's request and outcome before the collection after the response, so it
    walks what is left, not every decoded resource. Only the call's own: an app context
    the caller pushed (a script, a command) shares ``g`` and keeps the rest."""
    for name in CALL_STATE:
        state.__dict__.pop(name, None)


def _run_each(tasks: list) -> None:
    """Each task on its own: a failed metric must not lose the card records."""
    for task in tasks:
        try:
            task()
        except Exception as exc:
            log.error("bookkeeping after a response failed: %s", type(exc).__name__)


def _operations_endpoints(
    app: Flask, settings: Settings, store: storage.AnyStore, declared: tuple
) -> None:
    """Liveness, readiness, the OpenAPI document (of the ``declared`` services) and
    metrics."""

    @app.get("/healthz")
    def healthz():
        return json_response({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        """Readiness (not liveness): 503 while the store cannot take feedback."""
        ready, checks = store.health()
        return json_response(
            {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503
        )

    @app.get("/openapi.json")
    def openapi_document():
        from cds_service.web import openapi

        return json_response(openapi.document(declared=declared))

    @app.get("/metrics")
    def metrics_endpoint():
        if not settings.metrics_enabled:
            raise NotFound("Metrics are disabled (CDS_METRICS_ENABLED=false).")
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)


def _cds_endpoints(app: Flask, service: CdsService, store: storage.AnyStore, authenticate) -> None:
    """Discovery, the declared services and their feedback (CDS Hooks)."""

    @app.get("/cds-services")
    def discovery():
        authenticate()
        return json_response(service.discovery())

    def known_service(service_id: str) -> None:
        """404 for an id no declaration serves; otherwise authenticate the client."""
        g.service_id = services.find(service_id, service.services).id
        authenticate()

    @app.post("/cds-services/<service_id>")
    def invoke(service_id: str):
        known_service(service_id)
        started = time.perf_counter()
        payload, typed = read_json(fhir_json.decode_noting_path)
        parsed = time.perf_counter()
        note_request(payload)
        # Checked, evaluated, suppressed and recorded for the authenticated client, as for
        # every declared service (``CdsService.call``).
        outcome = service.call(service_id, payload, store, g.client)
        g.outcome = outcome
        request.environ[PHASES] = [
            ("parse", (parsed - started) * 1000.0),
            ("evaluate", (time.perf_counter() - parsed) * 1000.0),
        ]

        def count_cards() -> None:
            for route in outcome.routes:
                metrics.CARDS.labels(route).inc()

        g.after_sent = [count_cards]
        if not typed:  # answered like any other; counted after the answer, never failing it
            g.after_sent.append(lambda: metrics.PLAIN_DECODES.inc())
        # Freed with ``g`` once the response is sent (the bookkeeping holds it), so the EHR
        # does not wait while the decoded request is taken apart (~8% of a call).
        g.request_payload = payload
        return json_response(outcome.response)

    _feedback_endpoint(app, store, known_service)


def _feedback_endpoint(app: Flask, store: storage.AnyStore, known_service) -> None:
    @app.post("/cds-services/<service_id>/feedback")
    def post_feedback(service_id: str):
        known_service(service_id)
        items = feedback.validate(read_json())
        try:
            store.save_feedback(items, g.client)  # 403 for another client's card, 429 cap
        except storage.StoreUnavailable:
            raise Unavailable(
                "Feedback could not be stored right now; please retry.",
                headers={"Retry-After": "30"},
            ) from None
        return json_response({"status": "stored", "items": len(items)})
