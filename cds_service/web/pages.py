"""The pages a person reads in a browser: the explanation pages (rule catalogue) and the
admin report (off by default)."""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request

from cds_service import storage
from cds_service.config import Settings
from cds_service.errors import (
    NotFound,
    Unavailable,
)

log = logging.getLogger(__name__)

log = logging.getLogger("cds_service.web.app")


EXPLAIN_HEADERS = {
    # No patient data on these pages: cacheable by intent (HttpGuard still sends no-store).
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def explain_pages(app: Flask, settings: Settings, service) -> None:
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


def admin_report_page(app: Flask, settings: Settings, store: storage.AnyStore) -> None:
    """``GET /admin/report``: the feedback report as HTML (counts per route and rule, no
    patient data), only when CDS_ADMIN_REPORT is on (off by default)."""

    @app.get("/admin/report")
    def admin_report():
        if not getattr(settings, "admin_report", False):
            raise NotFound("The admin report is disabled (CDS_ADMIN_REPORT=false).")
        from cds_service import report

        try:
            if not store.ensure_schema():
                raise storage.StoreUnavailable("database unavailable")
            html = report.format_html(report.build_report(store, None))
        except Exception as exc:  # the message of a database error may hold row values
            log.warning("admin report not built: %s", type(exc).__name__)
            raise Unavailable(
                "The report cannot be built right now.", headers={"Retry-After": "30"}
            ) from None
        return Response(html, mimetype="text/html", headers=EXPLAIN_HEADERS)
