"""The criterion types, one class each; importing this package registers them all."""

from cds_service.engine.criteria import coded, logic, medication, missing, observation
from cds_service.engine.criteria.base import TYPES, Criterion, Definitions, Need

__all__ = [
    "TYPES",
    "Criterion",
    "Definitions",
    "Need",
    "coded",
    "logic",
    "medication",
    "missing",
    "observation",
]
