"""HTTP layer: the CDS Hooks endpoints, errors as OperationOutcome, CORS.

Everything clinical happens in ``service.CdsService``; this module only turns HTTP into
calls on it and answers in the shapes the CDS Hooks spec asks for.
"""

from __future__ import annotations

import logging
import time

import orjson
from flask import Flask, Response, g, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from cds_service import SERVICE_ID, logs, metrics
from cds_service.config import Settings
from cds_service.errors import (
    CdsError,
    HttpError,
    InvalidRequest,
    NotFound,
    Unavailable,
    UnsupportedMediaType,
)
from cds_service.protocol import feedback, fhir_json
from cds_service.service import CdsService
from cds_service.storage import Store, StoreUnavailable
from cds_service.web.http_errors import from_http_exception, operation_outcome, status_of
from cds_service.web.http_guard import BODY_ERROR, ORIGINAL_PATH, HttpGuard
from cds_service.web.security import Authenticator

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "application/fhir+json")
STARTED = "cds.started"  # WSGI environ key: perf_counter() when the request reached the app
PHASES = "cds.phases"  # WSGI environ key: [(phase, ms)] of a hook call, for Server-Timing


class ServerTiming:
    """WSGI middleware: ``Server-Timing: app;dur=<ms>`` on every response (a hook call adds
    ``parse`` and ``evaluate``, so an integrator sees where the time went).

    The clock starts when the WSGI server hands over the request and stops when the
    response headers are sent (for our non-streamed responses, after the body is built),
    so it covers routing, parsing, the rules, rendering and serialising. Benchmarks compare
    this server time, free of client and network overhead; bench/baseline.py uses the
    same middleware so both sides are measured the same way.
    """

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        environ[STARTED] = started

        def timed_start_response(status, headers, exc_info=None):
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            parts = [f"app;dur={elapsed_ms:.3f}"]
            parts += [f"{name};dur={ms:.3f}" for name, ms in environ.get(PHASES, ())]
            headers.append(("Server-Timing", ", ".join(parts)))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, timed_start_response)


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, mimetype="application/json")


def error_response(error: CdsError) -> Response:
    status = status_of(error)
    return json_response(
        operation_outcome(status, error.message, error.diagnostics), status, error.headers
    )


def read_json(decode=orjson.loads) -> object:
    """The request body as JSON, after the size and content-type checks."""
    mimetype = (request.mimetype or "").lower()
    if mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("Content-Type must be application/json.")
    data = request.get_data(cache=False)  # 413 above MAX_CONTENT_LENGTH (CDS_MAX_BODY_BYTES)
    try:
        return decode(data)
    except orjson.JSONDecodeError:
        raise InvalidRequest("Request body is not valid JSON.") from None


def _note_request(payload: object) -> None:
    """Keep the hookInstance for the access log (an opaque id, nothing about the patient)."""
    hook_instance = payload.get("hookInstance") if isinstance(payload, dict) else None
    if isinstance(hook_instance, str) and 0 < len(hook_instance) <= 128:
        g.hook_instance = hook_instance


def _access_line(state, method: str, endpoint: str, status: int, elapsed: float) -> dict:
    """One PHI-free line per request, errors included (see cds_service.logs)."""
    outcome = state.get("outcome")
    return {
        "method": method,
        "endpoint": endpoint,
        "service": state.get("service_id"),
        "status": status,
        "duration_ms": round(elapsed * 1000.0, 3),
        "hookInstance": state.get("hook_instance"),
        "routes": outcome.routes if outcome is not None else None,
        "rules": outcome.rule_ids if outcome is not None else None,
        "cards": len(outcome.routes) if outcome is not None else None,
        "resources": outcome.resource_count if outcome is not None else None,
        "resource_counts": outcome.resource_counts if outcome is not None else None,
        "error": state.get("error"),
    }


def create_app(
    settings: Settings | None = None, service: CdsService | None = None, store: Store | None = None
) -> Flask:
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level)
    service = service or CdsService(settings)
    store = store or Store(settings)
    authenticator = Authenticator(settings, replay_store=store)
    # Which override reasons suppress which route's card, from the rule files.
    store.suppression_policy = getattr(service, "suppression_policy", {})
    store.urgent_routes = getattr(service, "urgent_routes", set())

    app = Flask(__name__)
    # Never answer a redirect built from the Host header (``//x`` -> 308 to ``http://host/x``);
    # HttpGuard merges slashes before routing instead.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["cds"] = service
    app.extensions["cds_store"] = store
    CORS(
        app,
        origins=list(settings.cors_origins),
        allow_headers=["Authorization", "Content-Type"],
        methods=["GET", "POST", "OPTIONS"],
        max_age=600,
        # Browsers (the CDS Hooks sandbox) always send Origin on cross-origin calls; EHRs
        # calling server to server do not, and read no CORS headers.
        always_send=False,
    )

    def authenticate() -> None:
        # The JWT's aud names the URL as called (before HttpGuard normalised the path).
        authenticator.authenticate(
            request.headers.get("Authorization"), request.environ.get(ORIGINAL_PATH, request.path)
        )

    app.wsgi_app = ServerTiming(HttpGuard(app.wsgi_app, settings.max_body_bytes))

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
                    lambda: logs.access(_access_line(state, method, endpoint, status, elapsed))
                )
            for task in tasks + state.get("after_sent", []):
                try:  # each on its own: a failed metric must not lose the card records
                    task()
                except Exception as exc:
                    log.error("bookkeeping after a response failed: %s", type(exc).__name__)

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

        return json_response(openapi.document())

    @app.get("/metrics")
    def metrics_endpoint():
        if not settings.metrics_enabled:
            raise NotFound("Metrics are disabled (CDS_METRICS_ENABLED=false).")
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    @app.get("/cds-services")
    def discovery():
        authenticate()
        return json_response(service.discovery())

    def known_service(service_id: str) -> None:
        """404 for an id we do not serve; otherwise authenticate the client."""
        if service_id != SERVICE_ID:
            raise NotFound("Unknown CDS service id.")
        g.service_id = SERVICE_ID
        authenticate()

    @app.post("/cds-services/<service_id>")
    def invoke(service_id: str):
        known_service(service_id)
        started = time.perf_counter()
        payload = read_json(fhir_json.decode_request)
        parsed = time.perf_counter()
        _note_request(payload)
        outcome = service.evaluate(payload)
        if hasattr(service, "apply_suppressions"):
            service.apply_suppressions(outcome, payload["context"]["patientId"], store)
        g.outcome = outcome
        request.environ[PHASES] = [
            ("parse", (parsed - started) * 1000.0),
            ("evaluate", (time.perf_counter() - parsed) * 1000.0),
        ]
        hook_instance, patient_id = payload["hookInstance"], payload["context"]["patientId"]

        def record_outcome() -> None:
            for route in outcome.routes:
                metrics.CARDS.labels(route).inc()
            store.record_cards(
                hook_instance,
                patient_id,
                outcome.response["cards"],
                outcome.rule_ids,
                getattr(outcome, "fingerprints", None),
                getattr(outcome, "suppressed", None),
            )

        g.after_sent = [record_outcome]
        # Freed with ``g`` once the response is sent (the bookkeeping holds it), so the EHR
        # does not wait while the decoded request is taken apart (~8% of a call).
        g.request_payload = payload
        return json_response(outcome.response)

    _explain_pages(app, settings, service)
    _admin_report(app, settings, store)

    @app.post("/cds-services/<service_id>/feedback")
    def post_feedback(service_id: str):
        known_service(service_id)
        items = feedback.validate(read_json())
        try:
            store.save_feedback(items)
        except StoreUnavailable:
            raise Unavailable(
                "Feedback could not be stored right now; please retry.",
                headers={"Retry-After": "30"},
            ) from None
        return json_response({"status": "stored", "items": len(items)})

    return app


EXPLAIN_HEADERS = {
    # No patient data on these pages: cacheable by intent (HttpGuard still sends no-store).
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def _explain_pages(app: Flask, settings: Settings, service) -> None:
    """``GET /explain`` (the rule catalogue) and ``GET /explain/<route>?rules=a,b`` (one
    route, the rules that fired first): HTML generated from the loaded rules, no patient
    data, no authentication (a clinician opens them from a card link in a browser)."""
    from cds_service.render import explain

    ruleset = getattr(service, "ruleset", None)
    cards_dir = getattr(getattr(service, "settings", None), "cards_dir", settings.cards_dir)
    explainer = explain.Explainer(ruleset, cards_dir) if ruleset is not None else None
    app.extensions["cds_explainer"] = explainer

    # request.host_url by what it is computed from; werkzeug rebuilds and re-decodes it on
    # every request (~2% of a small hook call). Bounded: the Host header is the client's.
    base_urls: dict[tuple, str] = {}

    @app.before_request
    def _note_base_url():
        """Card links need an absolute URL: this request's, unless CDS_PUBLIC_BASE_URL is set."""
        environ = request.environ
        key = (
            environ.get("wsgi.url_scheme"),
            environ.get("HTTP_HOST"),
            environ.get("SERVER_NAME"),
            environ.get("SERVER_PORT"),
            environ.get("SCRIPT_NAME"),
        )
        url = base_urls.get(key)
        if url is None:
            url = request.host_url
            if len(base_urls) < 64:
                base_urls[key] = url
        g.explain_token = explain.REQUEST_BASE_URL.set(url)

    @app.teardown_request
    def _forget_base_url(_error=None):
        token = g.pop("explain_token", None)
        if token is not None:
            explain.REQUEST_BASE_URL.reset(token)

    def page(html: str) -> Response:
        return Response(html, mimetype="text/html", headers=EXPLAIN_HEADERS)

    @app.get("/explain")
    def explain_index():
        if explainer is None:
            raise NotFound("No rules are loaded.")
        return page(explainer.index_html())

    @app.get("/explain/<route_code>")
    def explain_route(route_code: str):
        html = (
            explainer.route_html(route_code, request.args.get("rules", "")) if explainer else None
        )
        if html is None:
            raise NotFound("Unknown referral route.")
        return page(html)


def _admin_report(app: Flask, settings: Settings, store: Store) -> None:
    """``GET /admin/report``: the feedback report as HTML (counts per route and rule, no
    patient data), only when CDS_ADMIN_REPORT is on (off by default)."""

    @app.get("/admin/report")
    def admin_report():
        if not getattr(settings, "admin_report", False):
            raise NotFound("The admin report is disabled (CDS_ADMIN_REPORT=false).")
        from cds_service import report

        try:
            if not store.ensure_schema():
                raise StoreUnavailable("database unavailable")
            html = report.format_html(report.build_report(store, None))
        except Exception as exc:  # the message of a database error may hold row values
            log.warning("admin report not built: %s", type(exc).__name__)
            raise Unavailable(
                "The report cannot be built right now.", headers={"Retry-After": "30"}
            ) from None
        return Response(html, mimetype="text/html", headers=EXPLAIN_HEADERS)
