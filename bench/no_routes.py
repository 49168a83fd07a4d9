"""The service with no routes loaded: the peer comparison's measure of the serving stack.

Same HTTP layer, decode, gate (the leg-cramp problem is found and validated), record and
bookkeeping as the service, under the same gunicorn settings, but no route is evaluated,
so no card is made (and no suppression is looked up). Next to the service and the Node
reference in ``make bench`` it shows how much of a call the rules and cards take and how
much the rest (bench/NOTES.md, session 7). Served by ``bench/run.py`` only.
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
