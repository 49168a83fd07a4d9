"""The gallery page: every chart's cards as a clinician sees them, beside its key data.

Self-contained: one file, CSS inline, no script, no image, no font or stylesheet fetched,
and a Content-Security-Policy that forbids loading anything (an injected ``<script>`` or
``<img>`` would not run or load even if escaping failed). Chart and card text is untrusted:
Jinja2 escapes everything, and card details go through markdown-it-py with raw HTML off
(its own link validation drops ``javascript:`` and other unsafe links). Only ``http(s)``
URLs become links; anything else is shown as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

from cds_service.gallery.keydata import KeyData

# CommonMark with tables and strikethrough; ``html: False`` escapes any HTML in the text, and
# images are off (an image would be fetched from wherever the chart says).
_MARKDOWN = (
    MarkdownIt("commonmark", {"html": False, "linkify": False})
    .enable(["table", "strikethrough"])
    .disable("image")
)


@dataclass
class Section:
    """One chart: where it came from, its key data and what the service answered."""

    anchor: str
    title: str
    origin: str
    notes: list[str]
    data: KeyData | None
    cards: list[dict]
    error: str = ""


def markdown(text: object) -> Markup:
    """A card detail (CDS Hooks: GitHub-flavoured markdown) as safe HTML."""
    return Markup(_MARKDOWN.render(str(text or "")))


def web_url(url: object) -> str:
    """``url`` when it is an http(s) address, else "" (the template shows it as text)."""
    text = str(url or "")
    return text if text.lower().startswith(("https://", "http://")) else ""


def action_words(suggestion: dict[str, Any]) -> list[str]:
    """Each action of a suggestion in words: its type, description and resource type."""
    words = []
    for action in suggestion.get("actions") or []:
        if not isinstance(action, dict):
            continue
        resource = action.get("resource")
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        parts = [str(action.get("type") or "action"), kind and f"a {kind}"]
        text = " ".join(p for p in parts if p)
        if action.get("description"):
            text += f": {action['description']}"
        words.append(text)
    return words


def render(sections: list[Section], heading: dict[str, Any]) -> str:
    env = Environment(
        loader=PackageLoader("cds_service.gallery", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["markdown"] = markdown
    env.filters["web_url"] = web_url
    env.filters["action_words"] = action_words
    counts = {"critical": 0, "warning": 0, "info": 0}
    for section in sections:
        for card in section.cards:
            indicator = str(card.get("indicator"))
            counts[indicator] = counts.get(indicator, 0) + 1
    return env.get_template("gallery.html").render(
        sections=sections, heading=heading, counts=counts
    )
