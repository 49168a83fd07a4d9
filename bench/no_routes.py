"""The service with no routes loaded: the peer comparison's measure of the serving stack.

The same gunicorn settings, HTTP layer, decode, gate (the leg-cramp problem is found and
validated) and per-request bookkeeping (metrics, access line) as the service, but no route
is evaluated. So everything a route costs is left out: its rules, the record's indexing of
Observations, Procedures and ServiceRequests (only Conditions are read, for the gate), the
cards and their fingerprints, the suppression lookup and the issued-card records. Next to
the service and the Node reference in ``make bench`` it shows what the routes cost and what
the rest does (bench/NOTES.md, session 7). Served by ``bench/run.py`` only.
"""

from __future__ import annotations

from dataclasses import replace

from cds_service.config import Settings
from cds_service.engine import load_rules
from cds_service.service import CdsService
from cds_service.web.app import create_app

_settings = Settings.from_env()
app = create_app(
    _settings,
    service=CdsService(_settings, ruleset=replace(load_rules(_settings.cards_dir), routes=[])),
)
