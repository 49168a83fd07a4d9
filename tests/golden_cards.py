"""The cards every example and every shared record gives, as one JSON file, so a redesign of
the engine can show it changed nothing (issue 11): ``test_golden_cards.py`` compares, and
``python tests/golden_cards.py`` rewrites ``tests/golden/cards.json`` after an intended change
(the diff of that file is then the list of changed cards, for the review and the issue note).

Uuids and the hook instance are left out; everything a clinician sees (summary, detail,
indicator, source, suggestions, links, overrides) is kept.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthea import SYNTHEA_DIR, hook_request, newest_date, synthea_files  # noqa: E402

from cds_service.config import Settings  # noqa: E402
from cds_service.service import CdsService  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden" / "cards.json"
EXAMPLES_TODAY = "2026-11-24"
SET_A_TODAY = "2026-11-24"


def _strip(value):
    """The card without what changes per call (uuids)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in sorted(value.items()) if k != "uuid"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _cards(today: str, request: dict) -> list[dict]:
    service = CdsService(Settings.from_env({}, today=today), fetcher=lambda *a: {})
    return _strip(service.evaluate(request).response["cards"])


def _shifted_today(path: Path) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(newest_date(path)) + timedelta(days=7)).isoformat()


def current() -> dict[str, list[dict]]:
    """{case name: cards} for every example and shared record, as the service answers now."""
    out: dict[str, list[dict]] = {}
    for path in sorted((ROOT / "fhir_examples").glob("*.json")):
        out["example/" + path.name] = _cards(EXAMPLES_TODAY, json.loads(path.read_text()))
    for path in synthea_files():
        # As the shared-records test reads them: on a fixed day, and a week after the chart's
        # newest entry with the leg cramps new that day.
        out[f"shared/{path.name}@{SET_A_TODAY}"] = _cards(SET_A_TODAY, hook_request(path))
        today = _shifted_today(path)
        out[f"shared/{path.name}@{today}"] = _cards(today, hook_request(path, cramp_onset=today))
    return out


def available() -> bool:
    return SYNTHEA_DIR.exists()


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(current(), indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {GOLDEN.relative_to(ROOT)}")
