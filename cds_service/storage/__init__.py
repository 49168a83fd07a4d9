"""Durable record of issued cards and clinician feedback (SQLAlchemy; SQLite or PostgreSQL).

Read top-down:

- ``store.py``: ``Store``, what the app uses, put together from
  ``issued.py`` (card records, written in batches by ``card_writer.py``; feedback that came
  first is adopted), ``suppressions.py`` (overrides that leave a card out for a while),
  ``feedback.py`` (saving feedback) and ``replay.py`` (JWT ids used once), on the shared
  state and fault recovery of ``base.py``;
- ``salt.py``: the patient id is never stored, only HMAC-SHA256(salt, patient id);
- ``database.py``: the tables and the engine; ``migrations/``: the schema, upgraded by
  Alembic at start-up; ``health.py``: noticing a SQLite file that went away or went bad.
"""

from cds_service.storage.database import StoreUnavailable, parse_timestamp, utcnow
from cds_service.storage.salt import SALT_FILE, load_or_create_salt
from cds_service.storage.store import Store

__all__ = [
    "SALT_FILE",
    "Store",
    "StoreUnavailable",
    "load_or_create_salt",
    "parse_timestamp",
    "utcnow",
]
