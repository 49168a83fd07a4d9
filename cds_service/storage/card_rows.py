"""The ``issued_card`` rows of one hook call: what is recorded of each card shown and of each
card a suppression left out, never the patient id (only its salted hash).

Free of SQLAlchemy, so the starting store (starting.py) can spool a call's records before
the database is open, exactly as the open store (issued.py) does.
"""

from __future__ import annotations

from datetime import datetime
from itertools import zip_longest
from typing import Protocol


class Hasher(Protocol):
    def patient_hash(self, patient_id: str) -> str: ...

    def fingerprint_key(self, fingerprint: str | None) -> str | None: ...


def card_rows(
    hasher: Hasher,
    hook_instance: str,
    patient_id: str,
    cards: list[dict],
    rule_ids: list[str],
    fingerprints: list[str] | None,
    suppressed: list[dict] | None,
    issued_at: datetime,
    client: str,
) -> list[dict]:
    """One row per card with a uuid: card uuid, route, fired rule ids, hookInstance, hashed
    patient, time, salted evidence fingerprint, indicator, left out or not, client."""
    entries: list[tuple[dict, object, str | None, bool]] = [
        (card, rules, fp, False)
        for card, rules, fp in zip_longest(
            cards or [], rule_ids or [], fingerprints or [], fillvalue=None
        )
        if isinstance(card, dict) and card.get("uuid")
    ]
    entries += [
        (s["card"], s.get("rules"), s.get("fingerprint"), True)
        for s in suppressed or []
        if isinstance(s.get("card"), dict) and s["card"].get("uuid")
    ]
    if not entries:
        return []
    patient_hash = hasher.patient_hash(str(patient_id))
    rows = []
    for card, rules, fp, left_out in entries:
        topic = (card.get("source") or {}).get("topic") or {}
        indicator = card.get("indicator")
        rows.append(
            {
                "card_uuid": str(card["uuid"]),
                "route": str(topic.get("code") or "unknown"),
                "rule_ids": str(rules or ""),
                "hook_instance": str(hook_instance),
                "patient_hash": patient_hash,
                "issued_at": issued_at,
                "fingerprint": hasher.fingerprint_key(fp),
                "indicator": str(indicator)[:16] if indicator else None,
                "suppressed": left_out,
                "client": str(client),
            }
        )
    return rows
