"""The card spool's files: where they are, what a line holds, and finding a card's records.

A line is one hook call's rows as JSON, every field kept (datetimes tagged), so a column
added to ``issued_card`` survives the spool. Files are ``<ns>-<pid>-<n>.cards`` in one
directory per database under ``CDS_DATA_DIR/card-spool`` (spool.py writes and reads them).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Iterable
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import orjson

if TYPE_CHECKING:
    from cds_service.config import Settings

SPOOL_DIR = "card-spool"  # under CDS_DATA_DIR
SUFFIX = ".cards"
FIND_BYTES = 16 * 1024 * 1024  # most bytes ``find_records`` reads (newest files first)
FIND_IDS = 50  # most cards one ``find_records`` looks for (the others wait for the store)
# A card id in a line as ``encode`` writes it (orjson: compact, the string JSON-escaped).
_CARD_UUID = re.compile(rb'"card_uuid":"((?:[^"\\]|\\.)*)"')
_DATETIME = "$datetime"  # tag of a datetime value in a line


def directory_for(settings: Settings) -> Path:
    """The spool directory of one database (a hash of its URL without the password), so
    records are only ever written to the database they were meant for."""
    parts = urlsplit(settings.effective_database_url)
    netloc = parts.netloc.rpartition("@")[2]  # without user and password
    database = urlunsplit(parts._replace(netloc=f"{parts.username or ''}@{netloc}"))
    key = hashlib.sha256(database.encode()).hexdigest()[:16]
    return settings.data_dir / SPOOL_DIR / key


def encode(rows: list[dict]) -> bytes:
    """One line: the rows with all their fields (datetimes tagged, naive UTC kept naive)."""
    return orjson.dumps(
        rows,
        default=_tag,
        option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_APPEND_NEWLINE,
    )


def _tag(value: object) -> object:
    if isinstance(value, datetime):
        return {_DATETIME: value.isoformat()}
    raise TypeError(type(value).__name__)


def decode(line: bytes) -> list[dict]:
    """The rows of one line; ValueError when it is not one ``encode`` wrote."""
    rows = orjson.loads(line)
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError("not a list of records")
    for row in rows:
        for name, value in row.items():
            if isinstance(value, dict) and _DATETIME in value:
                row[name] = datetime.fromisoformat(value[_DATETIME])
    return rows


def find_records(directory: Path, card_uuids: Iterable[str]) -> list[dict]:
    """The records of these cards (the first ``FIND_IDS`` of them: a batch of invented ids
    costs no more) still in a spool file of this database (any process on this host),
    newest files first, reading at most ``FIND_BYTES``. Each line's card ids are read once
    and looked up in a set; only a line holding a wanted card is decoded."""
    wanted = {_key(uuid) for uuid in islice(dict.fromkeys(card_uuids), FIND_IDS)}
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX))
    except OSError:
        return []
    found: list[dict] = []
    budget = FIND_BYTES
    for name in reversed(names):
        if not wanted or budget <= 0:
            break
        try:
            with open(directory / name, "rb") as file:
                data = file.read(budget)
        except OSError:  # written and removed meanwhile
            continue
        budget -= len(data)
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n") or wanted.isdisjoint(_CARD_UUID.findall(line)):
                continue
            try:
                rows = decode(line)
            except ValueError:
                continue
            keys = [_key(row.get("card_uuid")) for row in rows]
            found.extend(row for row, key in zip(rows, keys, strict=True) if key in wanted)
            wanted.difference_update(keys)
    return found


def _key(card_uuid: object) -> bytes | None:
    """A card id as it appears in a line (JSON-escaped, without the quotes)."""
    return orjson.dumps(card_uuid)[1:-1] if isinstance(card_uuid, str) else None


def lock_orphan(path: Path) -> int | None:
    """An open descriptor holding the lock of ``path`` if its owner is gone, else None."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        same = os.fstat(fd).st_ino == os.stat(path).st_ino  # not removed meanwhile
    except OSError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


def unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
