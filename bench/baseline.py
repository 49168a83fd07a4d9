"""The yardstick: a minimal Flask endpoint that only reads and parses the JSON body.

Served by ``bench/run.py`` under gunicorn with the service's own gunicorn settings
(``cds_service.web.gunicorn_conf``) and the same ``Server-Timing`` middleware, so the ratio
"service time / baseline time" isolates what the service adds on top of receiving and
parsing the same request.
"""

from __future__ import annotations

import orjson
from flask import Flask, Response, request

from cds_service.web.app import ServerTiming


def create_baseline() -> Flask:
    app = Flask("baseline")

    @app.post("/cds-services/<service_id>")
    def parse_only(service_id: str):
        payload = orjson.loads(request.get_data(cache=False))
        return Response(
            orjson.dumps({"cards": [], "keys": len(payload)}), mimetype="application/json"
        )

    @app.get("/healthz")
    def healthz():
        return Response(b'{"status":"ok"}', mimetype="application/json")

    app.wsgi_app = ServerTiming(app.wsgi_app)
    return app


app = create_baseline()
