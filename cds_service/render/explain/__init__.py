"""Explanation pages: the loaded rules in plain words, for clinicians and clinical reviewers.

Every card links (type ``absolute``) to ``/explain/<route>?rules=<ids that fired>``; the same
pages with an index (``/explain``) are the rule catalogue for clinical review, and
``cds-service check-rules --explain`` prints the same content as text. Nothing here is
hand-written per route: each page is generated from the typed ``RuleSet`` loaded from
``cards/``, once per rule set. No patient data ever reaches a URL or a page: the only input
is a route code and rule ids, and rule ids that the route does not define are dropped.

Modules: ``urls`` (links, base URL, content hash), ``model`` (the page model), ``codes`` and
``wording`` (what a rule reads, each criterion type in words), ``build`` (a route's model and
the source attributes), ``pages`` (HTML, ``templates/``) and ``tables`` (the text tables).
No Flask import: the HTTP layer in ``app.py`` serves the pages.

Source attributes (ONC HTI-1, 45 CFR 170.315(b)(11)(iv), evidence-based decision support
interventions: bibliographic citation, developer, funding source, release and revision
dates) come from ``source_attributes`` in ``cards/common.yaml`` plus each route's links;
the rule files' version is that block's ``version`` and a content hash of ``cards/``.
"""

from cds_service.render.explain.build import (
    evidence_level,
    explain_route,
    explain_shared,
    rule_content,
    source_attributes,
)
from cds_service.render.explain.model import (
    Code,
    CodeList,
    RouteExplanation,
    RuleExplanation,
    SourceAttributes,
    VariantExplanation,
)
from cds_service.render.explain.pages import Explainer
from cds_service.render.explain.tables import decision_tables
from cds_service.render.explain.urls import (
    DEFAULT_BASE_URL,
    EXPLAIN_PATH,
    REQUEST_BASE_URL,
    base_url,
    clean_rule_ids,
    explain_link,
    explain_url,
    rules_hash,
)
from cds_service.render.explain.wording import threshold_words

__all__ = [
    "DEFAULT_BASE_URL",
    "EXPLAIN_PATH",
    "REQUEST_BASE_URL",
    "Code",
    "CodeList",
    "Explainer",
    "RouteExplanation",
    "RuleExplanation",
    "SourceAttributes",
    "VariantExplanation",
    "base_url",
    "clean_rule_ids",
    "decision_tables",
    "evidence_level",
    "explain_link",
    "explain_route",
    "explain_shared",
    "explain_url",
    "rule_content",
    "rules_hash",
    "source_attributes",
    "threshold_words",
]
