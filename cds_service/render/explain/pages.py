"""The explanation pages as HTML (Jinja2 with autoescaping, ``templates/``).

``Explainer`` builds every route's page model once for its rule set; a request only marks
the rules that fired on a copy and renders it, and the rendered pages are remembered.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from cds_service.render.explain.build import explain_route, explain_shared, gate, source_attributes
from cds_service.render.explain.tables import decision_tables
from cds_service.render.explain.urls import EXPLAIN_PATH, clean_rule_ids, rules_hash

if TYPE_CHECKING:
    from cds_service.engine.model import Route, RuleSet

PAGE_CACHE_SIZE = 512  # (route, rules that fired) pairs remembered


class Explainer:
    """Renders the pages and the text table from one loaded ``RuleSet``."""

    def __init__(self, ruleset: RuleSet, cards_dir: Path):
        from jinja2 import Environment, PackageLoader, select_autoescape

        self.ruleset = ruleset
        self.content_hash = rules_hash(cards_dir)
        self.routes = {route.code: route for route in ruleset.routes}
        self.env = Environment(
            loader=PackageLoader("cds_service.render.explain", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # Everything a page shows, worked out once for this rule set.
        self.models = {code: explain_route(route, ruleset) for code, route in self.routes.items()}
        self.sources = {
            code: source_attributes(ruleset, self.content_hash, [route])
            for code, route in self.routes.items()
        }
        self.source = source_attributes(ruleset, self.content_hash)
        self.gate = gate(ruleset)
        self._index: str | None = None
        self._text: str | None = None
        # Pages depend only on the route and the (known) rule ids that fired: remembered.
        self._route_page = lru_cache(maxsize=PAGE_CACHE_SIZE)(self._render_route)

    def route(self, code: str) -> Route | None:
        return self.routes.get(code)

    def index_html(self) -> str:
        if self._index is None:
            self._index = self.env.get_template("index.html").render(
                routes=list(self.models.values()),
                shared=explain_shared(self.ruleset),
                source=self.source,
                gate=self.gate,
                base=EXPLAIN_PATH,
            )
        return self._index

    def route_html(self, code: str, fired: Iterable[str] | str = ()) -> str | None:
        """The route's page (None: no such route); unknown rule ids are ignored."""
        route = self.routes.get(code)
        if route is None:
            return None
        ids = tuple(sorted(set(clean_rule_ids(fired)) & set(route.criteria)))
        return self._route_page(code, ids)

    def _render_route(self, code: str, fired: tuple[str, ...]) -> str:
        explanation = self.models[code].with_fired(set(fired))
        return self.env.get_template("route.html").render(
            route=explanation,
            source=self.sources[code],
            gate=self.gate,
            base=EXPLAIN_PATH,
            fired=[r for r in explanation.rules if r.fired],
        )

    def text(self) -> str:
        if self._text is None:
            self._text = decision_tables(self.ruleset, self.content_hash, models=self.models)
        return self._text
