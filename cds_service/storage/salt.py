"""The salt of the patient hash: ``CDS_PATIENT_HASH_SALT``, else a random file created once
in ``CDS_DATA_DIR``. The patient id is never stored, only HMAC-SHA256(salt, patient id)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

from cds_service.config import Settings

SALT_FILE = "patient-hash-salt"
RECENT_HASHES = 256  # hashes remembered per process (patients and fingerprints of late)


def load_or_create_salt(data_dir: Path) -> bytes:
    """The salt kept in ``data_dir``, created (random, mode 0600) on first use.

    Several workers may start together: each writes its own temporary file and links it into
    place; ``link`` fails if another worker won, and then everybody reads the winner's salt.
    """
    path = data_dir / SALT_FILE
    if not path.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = data_dir / f".{SALT_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(32) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    salt = path.read_text(encoding="ascii").strip()
    if not salt:
        raise ValueError(f"{path} is empty")
    return salt.encode()


class PatientHasher:
    """HMAC-SHA256 with the salt, read (or created) on first use."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._salt: bytes | None = None
        self._lock = threading.Lock()
        self._recent: dict[str, str] = {}  # patient id (or fingerprint) -> its hash

    def patient_hash(self, patient_id: str) -> str:
        """HMAC-SHA256(salt, patient id), hex; the last few are remembered, since one hook
        call hashes its patient twice (suppression lookup, card records)."""
        known = self._recent.get(patient_id)
        if known is not None:
            return known
        if self._salt is None:
            with self._lock:
                if self._salt is None:
                    configured = self.settings.patient_hash_salt.get_secret_value()
                    self._salt = (
                        configured.encode()
                        if configured
                        else load_or_create_salt(self.settings.data_dir)
                    )
        digest = hmac.new(self._salt, patient_id.encode(), hashlib.sha256).hexdigest()
        if len(self._recent) >= RECENT_HASHES:
            self._recent.clear()
        self._recent[patient_id] = digest
        return digest

    def fingerprint_key(self, fingerprint: str | None) -> str | None:
        """The stored form of an evidence fingerprint: salted like the patient hash, so
        the evidence cannot be guessed from the database."""
        if not fingerprint:
            return None
        return self.patient_hash("fingerprint\x00" + fingerprint)

    def restore_file(self, data_dir: Path) -> None:
        """Into a recreated data directory: the salt file this process read at first, so
        hashes stay the same (nothing to do when the salt is configured or not read yet).
        Raises OSError."""
        if self._salt is None or self.settings.patient_hash_salt:
            return
        fd = os.open(data_dir / SALT_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(self._salt.decode() + "\n")
