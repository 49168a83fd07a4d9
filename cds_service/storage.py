"""Durable record of issued cards and clinician feedback (SQLAlchemy; SQLite or PostgreSQL)."""

from __future__ import annotations

import logging

from cds_service.config import Settings

log = logging.getLogger(__name__)


class StoreUnavailable(RuntimeError):
    """The database cannot be reached; feedback answers 503 so the client retries."""


class Store:
    """Interface used by the app. ``record_cards`` must never raise or block the hook."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def record_cards(self, hook_instance: str, patient_id: str, cards: list[dict],
                     rule_ids: list[str]) -> None:
        """Queue the issued cards for writing (card uuid, route, rule id, hashed patient)."""

    def save_feedback(self, items: list[dict]) -> None:
        """Store a batch of validated feedback items in one transaction."""

    def close(self) -> None:
        pass
