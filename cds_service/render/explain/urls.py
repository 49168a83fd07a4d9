"""Links to the explanation pages, and the version (content hash) of the rule files.

No patient data ever reaches a URL: the only input is a route code and rule ids, and
anything that is not a rule id is dropped.
"""

from __future__ import annotations

import contextvars
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from cds_service.config import Settings

EXPLAIN_PATH = "/explain"
DEFAULT_BASE_URL = "http://127.0.0.1:8080"
# As rules-route.json's $defs/id, and with at least one letter, so that no date or number
# (a birth date, a record number, a value) can pass for a rule id.
RULE_ID = re.compile(r"^(?=[a-z0-9-]*[a-z])[a-z0-9][a-z0-9-]{0,99}$")
MAX_RULE_IDS = 50

# The base URL of the request being served, set by the HTTP layer for the request's duration
# (``app.py``) so card rendering, which knows nothing of HTTP, can build absolute links.
REQUEST_BASE_URL: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "explain_request_base_url", default=None
)


def base_url(settings: Settings | None = None) -> str:
    """The service's public base URL, without a trailing slash.

    ``CDS_PUBLIC_BASE_URL`` when set; else the URL of the request being served (set by the
    HTTP layer); else, outside any request (``cds-service evaluate``), the configured
    ``CDS_HOST``/``CDS_PORT`` (a wildcard host such as 0.0.0.0 becomes 127.0.0.1), and
    http://127.0.0.1:8080 when the settings cannot be read.
    """
    if settings is None:
        from cds_service.config import ConfigError, Settings

        try:
            settings = Settings.from_env()
        except ConfigError:
            settings = None
    if settings is not None and settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    current = REQUEST_BASE_URL.get()
    if current:
        return current.rstrip("/")
    if settings is None:
        return DEFAULT_BASE_URL
    host = settings.host if settings.host not in ("", "0.0.0.0", "::", "[::]") else "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{settings.port}"


def clean_rule_ids(rule_ids: Iterable[str] | str | None) -> list[str]:
    """Rule ids as they may appear in a URL: the id pattern only, each once, in order.

    Anything else (a value, a name, free text) is dropped, so no patient data can be
    carried into an explanation link even by mistake."""
    if rule_ids is None:
        return []
    if isinstance(rule_ids, str):
        rule_ids = rule_ids.split(",")
    seen: dict[str, None] = {}
    for rule_id in rule_ids:
        rule_id = str(rule_id).strip()
        if RULE_ID.match(rule_id) and len(seen) < MAX_RULE_IDS:
            seen.setdefault(rule_id, None)
    return list(seen)


def explain_url(base_url: str, route_code: str, rule_ids: Iterable[str] = ()) -> str:
    """Absolute URL of the explanation page of a route, the rules that fired first.

    >>> explain_url("https://cds.example.org/", "nephrology", ["egfr-below-30-known-ckd"])
    'https://cds.example.org/explain/nephrology?rules=egfr-below-30-known-ckd'

    ``base_url`` empty: http://127.0.0.1:8080. Rule ids that are not ids are dropped.
    """
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    url = f"{base}{EXPLAIN_PATH}/{quote(route_code, safe='')}"
    ids = clean_rule_ids(rule_ids)
    return f"{url}?rules={','.join(ids)}" if ids else url


def explain_link(
    route_code: str,
    rule_ids: Iterable[str] = (),
    settings: Settings | None = None,
    label: str = "Why this card: the rules explained",
) -> dict[str, str]:
    """A CDS Hooks card link to the explanation page (``base_url(settings)``)."""
    return {
        "label": label,
        "url": explain_url(base_url(settings), route_code, rule_ids),
        "type": "absolute",
    }


def rules_hash(cards_dir: Path) -> str:
    """SHA-256 over every rule file under ``cards_dir`` (names and bytes), first 12 hex."""
    digest = hashlib.sha256()
    root = Path(cards_dir)
    for path in sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".json")
    ):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
