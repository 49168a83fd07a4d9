"""Durable record of issued cards and clinician feedback (SQLAlchemy; SQLite or PostgreSQL).

Read top-down:

- ``starting.py``: ``StartingStore``, what the app starts with: the hook's path never waits
  for the database, which opens in the background;
- ``store.py``: ``Store``, the open store, put together from
  ``issued.py`` (card records, written in batches by ``card_writer.py``; feedback that came
  first is adopted), ``suppressions.py`` (overrides that leave a card out for a while),
  ``feedback.py`` (saving feedback) and ``replay.py`` (JWT ids used once), on the shared
  state and fault recovery of ``base.py``;
- ``salt.py``: the patient id is never stored, only HMAC-SHA256(salt, patient id);
- ``database.py``: the tables and the engine; ``migrations/``: the schema, upgraded by
  Alembic at start-up; ``health.py``: noticing a SQLite file that went away or went bad.

The names below are imported on first use (PEP 562), so importing this package does not
import SQLAlchemy (~0.1-0.4 s of a worker's start-up) until a store is opened.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from cds_service.storage.database import StoreUnavailable, parse_timestamp, utcnow
    from cds_service.storage.salt import SALT_FILE, load_or_create_salt
    from cds_service.storage.starting import StartingStore
    from cds_service.storage.store import Store

    AnyStore: TypeAlias = Store | StartingStore  # what the app is given: open, or opening

_WHERE = {
    "SALT_FILE": "salt",
    "StartingStore": "starting",
    "Store": "store",
    "StoreUnavailable": "database",
    "load_or_create_salt": "salt",
    "parse_timestamp": "database",
    "utcnow": "database",
}

__all__ = [
    "SALT_FILE",
    "StartingStore",
    "Store",
    "StoreUnavailable",
    "load_or_create_salt",
    "parse_timestamp",
    "utcnow",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
