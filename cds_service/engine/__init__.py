"""The rules engine, pure: no web, database or HTTP-client code (import-linter checks).

Top-down: ``loader`` reads the rule files into the ``model`` (routes, content, variants)
with one typed object per criterion (``criteria/``); ``evaluation`` runs them over a
``record.Record`` and returns ``facts`` (structured evidence; ``render`` words them).
"""

from cds_service.engine import loader
from cds_service.engine.evaluation import evaluate, gate_facts
from cds_service.engine.facts import Fact, RouteResult
from cds_service.engine.loader import load as load_rules
from cds_service.engine.model import Route, RuleError, RuleSet
from cds_service.engine.record import Record

__all__ = [
    "Fact",
    "Record",
    "Route",
    "RouteResult",
    "RuleError",
    "RuleSet",
    "evaluate",
    "gate_facts",
    "loader",
    "load_rules",
]
