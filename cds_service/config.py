"""Settings, read only from ``CDS_*`` environment variables (documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting has a value the service cannot use; raised at start-up."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Every knob of the service. Field name ``foo_bar`` is read from ``CDS_FOO_BAR``."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    env: str = "development"
    log_level: str = "INFO"
    cards_dir: Path = PROJECT_ROOT / "cards"
    max_body_bytes: int = 10 * 1024 * 1024
    cors_origins: tuple[str, ...] = ("*",)
    # Clinical "today" override, for demos and reproducible runs only (ISO date).
    today: str = ""
    # Fetching data the EHR did not prefetch.
    fhir_timeout: float = 3.0
    fhir_max_pages: int = 20
    fhir_max_resources: int = 10000
    fhir_pool_size: int = 6
    allow_http_fhir: bool | None = None
    # Authentication of CDS clients.
    auth_mode: str = "off"
    jwks_file: str = ""
    trusted_jku: tuple[str, ...] = ()
    trusted_issuers: tuple[str, ...] = ()
    public_base_url: str = ""
    jwt_max_lifetime: int = 300
    jwt_leeway: int = 30
    jwks_cache_ttl: int = 3600
    jwks_fetch_timeout: float = 2.0
    # Storage of issued cards and feedback.
    data_dir: Path = PROJECT_ROOT / "data"
    database_url: str = ""
    patient_hash_salt: str = ""
    # Metrics.
    metrics_enabled: bool = True

    @property
    def http_fhir_allowed(self) -> bool:
        """Plain-http FHIR servers are for local development only."""
        if self.allow_http_fhir is None:
            return self.env == "development"
        return self.allow_http_fhir

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'cds.sqlite3'}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "Settings":
        """Build settings from the environment; ``overrides`` win (used by tests)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            key = "CDS_" + f.name.upper()
            if key not in environ:
                continue
            raw = environ[key]
            try:
                values[f.name] = _convert(f.type, raw)
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.auth_mode not in {"off", "jwt"}:
            raise ConfigError("CDS_AUTH_MODE must be 'off' or 'jwt'")
        for name in ("workers", "fhir_pool_size", "fhir_max_pages", "fhir_max_resources", "port"):
            if getattr(self, name) < 1:
                raise ConfigError(f"CDS_{name.upper()} must be at least 1")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError("CDS_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        if self.today:
            try:
                date.fromisoformat(self.today[:10])
            except ValueError:
                raise ConfigError("CDS_TODAY must be an ISO date (YYYY-MM-DD)") from None
        if self.max_body_bytes <= 0:
            raise ConfigError("CDS_MAX_BODY_BYTES must be positive")
        if self.fhir_timeout <= 0:
            raise ConfigError("CDS_FHIR_TIMEOUT must be positive")


def _convert(type_name, raw: str):
    type_name = str(type_name)
    if type_name == "int":
        return int(raw)
    if type_name == "float":
        return float(raw)
    if type_name.startswith("bool"):
        return _bool(raw)
    if type_name.startswith("tuple"):
        return _list(raw)
    if type_name == "Path":
        return Path(raw)
    return raw
