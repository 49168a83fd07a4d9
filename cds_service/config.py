"""Settings, read only from ``CDS_*`` environment variables (documented in the README).

A typed ``pydantic-settings`` model: field ``foo_bar`` is read from ``CDS_FOO_BAR``. Lists are
comma-separated, booleans are ``1/true/yes/on`` or ``0/false/no/off`` (empty is false), and
secrets are ``SecretStr`` so they never show in a repr, a log line or an error message.
An unusable value raises ``ConfigError`` naming the variable (never a secret's value).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, tzinfo
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from cds_service.errors import CdsError
from cds_service.protocol.egress import parse_allowed_origin, parse_origins_by_issuer

ENV_PREFIX = "CDS_"
CARDS_PACKAGE = "cds_service.bundled_cards"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
UTC_NAMES = frozenset({"UTC", "Etc/UTC"})  # CDS_LOCAL_TIMEZONE values read as datetime.UTC


class ConfigError(CdsError, ValueError):
    """A setting has a value the service cannot use; raised at start-up."""


def bundled_cards_dir() -> Path:
    """The rule files shipped in the package (the repository's ``cards/``, see setup.py)."""
    root = files(CARDS_PACKAGE)
    if not isinstance(root, Path):  # e.g. imported from a zip: not supported
        raise ConfigError(
            f"the bundled rules ({CARDS_PACKAGE}) are not in a directory; set CDS_CARDS_DIR"
        )
    return root


# What ConfigError says about a field (instead of pydantic's wording), by field name.
MESSAGES = {
    "auth_mode": "must be 'off' or 'jwt'",
    "log_level": "must be " + ", ".join(LOG_LEVELS[:-1]) + " or " + LOG_LEVELS[-1],
    "today": "must be an ISO date (YYYY-MM-DD)",
    "local_timezone": "must be an IANA time zone name (e.g. UTC, America/Chicago)",
    "database_url": "must be a sqlite:/// or postgresql+psycopg:// URL, any port a number",
}
# The backends the store and its migrations support (the URL's scheme, before "://").
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")

Csv = Annotated[tuple[str, ...], NoDecode]  # comma-separated in the environment


class Settings(BaseSettings):
    """Every knob of the service. Field name ``foo_bar`` is read from ``CDS_FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1)
    workers: int = Field(2, ge=1)
    env: str = "development"
    log_level: str = "INFO"
    cards_dir: Path = Field(default_factory=bundled_cards_dir)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    cors_origins: Csv = ("*",)
    # Clinical "today" override, for demos and reproducible runs only (ISO date).
    today: str = ""
    # The zone of times written without one (HL7 v2 feeds): an IANA name, read by zoneinfo.
    local_timezone: str = "UTC"
    # Fetching data the EHR did not prefetch.
    fhir_timeout: float = Field(3.0, gt=0)
    fhir_max_pages: int = Field(20, ge=1)
    fhir_max_resources: int = Field(10000, ge=1)
    fhir_pool_size: int = Field(6, ge=1)
    allow_http_fhir: bool | None = None
    # Where fhirServer may point (None: loopback origins in development, none otherwise),
    # per trusted issuer in JWT mode, and whether loopback and private addresses may be
    # reached (development); link-local and metadata addresses never are (egress.py).
    fhir_allowed_origins: Annotated[tuple[str, ...] | None, NoDecode] = None
    fhir_allowed_origins_by_issuer: Annotated[dict[str, tuple[str, ...]], NoDecode] = Field(
        default_factory=dict
    )
    fhir_allow_internal_addresses: bool | None = None
    # Authentication of CDS clients.
    auth_mode: str = "off"
    jwks_file: str = ""
    trusted_jku: Csv = ()
    trusted_issuers: Csv = ()
    public_base_url: str = ""
    jwt_max_lifetime: int = 300
    jwt_leeway: int = 30
    jwks_cache_ttl: int = 3600
    jwks_fetch_timeout: float = 2.0
    # Storage of issued cards and feedback. The URL may hold a password: a secret.
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / "data")
    database_url: SecretStr = SecretStr("")
    patient_hash_salt: SecretStr = SecretStr("")
    # Card records the store could not take yet wait on disk (CDS_DATA_DIR/card-spool), at
    # most this many bytes per process; beyond, they are dropped (counted and logged).
    card_spool_max_bytes: int = Field(64 * 1024 * 1024, gt=0)
    # Feedback: an override suppresses only within this many hours of its card's issue;
    # without authentication it suppresses nothing unless allowed (development only).
    feedback_window_hours: int = Field(24, ge=1)
    suppression_without_auth: bool = False
    # Feedback rows for unknown cards kept per window, per client and overall (then 429).
    unknown_feedback_per_client: int = Field(1000, ge=1)
    unknown_feedback_total: int = Field(10000, ge=1)
    # Feedback rows on any card kept per window and client; without auth ("anonymous").
    feedback_per_client: int = Field(5000, ge=1)
    feedback_without_auth: int = Field(500, ge=1)
    # Metrics.
    metrics_enabled: bool = True
    # The feedback report as HTML at GET /admin/report (counts only, no patient data).
    admin_report: bool = False

    @field_validator(
        "cors_origins", "trusted_jku", "trusted_issuers", "fhir_allowed_origins", mode="before"
    )
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator(
        "allow_http_fhir",
        "fhir_allow_internal_addresses",
        "metrics_enabled",
        "admin_report",
        "suppression_without_auth",
        mode="before",
    )
    @classmethod
    def _empty_is_false(cls, value: Any) -> Any:
        return False if isinstance(value, str) and not value.strip() else value

    @field_validator("auth_mode")
    @classmethod
    def _check_auth_mode(cls, value: str) -> str:
        if value not in {"off", "jwt"}:
            raise ValueError(MESSAGES["auth_mode"])
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(MESSAGES["log_level"])
        return value

    @field_validator("today")
    @classmethod
    def _check_today(cls, value: str) -> str:
        if value:
            try:
                date.fromisoformat(value[:10])
            except ValueError:
                raise ValueError(MESSAGES["today"]) from None
        return value

    @field_validator("local_timezone")
    @classmethod
    def _check_local_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(MESSAGES["local_timezone"]) from None
        return value

    @field_validator("fhir_allowed_origins")
    @classmethod
    def _check_fhir_origins(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for entry in value or ():
            parse_allowed_origin(entry)  # ValueError: not scheme://host[:port|:*]
        return value

    @field_validator("fhir_allowed_origins_by_issuer", mode="before")
    @classmethod
    def _parse_fhir_origins_by_issuer(cls, value: Any) -> Any:
        return parse_origins_by_issuer(value) if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        """Refused at start-up, not when the store opens in the background (after the first
        answer): a mistyped URL must stop the service, not leave it running without one."""
        url = value.get_secret_value()
        if not url:
            return value
        if url.partition("://")[0].lower() not in DATABASE_SCHEMES:
            raise ValueError(MESSAGES["database_url"])
        try:
            _ = urlsplit(url).port  # a port that is not a number (SQLAlchemy would refuse it)
        except ValueError:
            raise ValueError(MESSAGES["database_url"]) from None
        return value

    @property
    def local_zone(self) -> tzinfo:
        """The zone times without one are read in (``CDS_LOCAL_TIMEZONE``). UTC, the default,
        as the fixed ``datetime.UTC``: the same times, and every instant already in UTC is
        placed in it without a zone lookup (``ZoneInfo("UTC")`` costs one per date read)."""
        return UTC if self.local_timezone in UTC_NAMES else ZoneInfo(self.local_timezone)

    @property
    def http_fhir_allowed(self) -> bool:
        """Plain-http FHIR servers are for local development only."""
        if self.allow_http_fhir is None:
            return self.env == "development"
        return self.allow_http_fhir

    @property
    def suppression_allowed(self) -> bool:
        """Overrides suppress cards only from verified clients (or when allowed without)."""
        return self.auth_mode == "jwt" or self.suppression_without_auth

    @property
    def fhir_internal_addresses_allowed(self) -> bool:
        """Loopback and private FHIR server addresses are for local development only."""
        if self.fhir_allow_internal_addresses is None:
            return self.env == "development"
        return self.fhir_allow_internal_addresses

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy URL to connect to (a secret: may hold a password)."""
        return self.database_url.get_secret_value() or f"sqlite:///{self.data_dir / 'cds.sqlite3'}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``environ`` (default: the process environment) and ``overrides``.

        ``overrides`` are field values and win over the environment (used by tests). Any
        unusable value raises ConfigError naming its variable.
        """
        with _environment(os.environ if environ is None else environ):
            try:
                return cls(**overrides)
            except ValidationError as exc:
                raise ConfigError(_describe(exc)) from None
            except SettingsError as exc:
                raise ConfigError(str(exc)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Overrides, then the environment; no .env or secrets files."""
        environ = _ENVIRON.get()
        if environ is not None:
            env_settings = _MappingSource(settings_cls, environ)
        return init_settings, env_settings


# The environment ``from_env`` reads, for the settings source (a context variable, so
# threads building settings from different mappings do not see each other's).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("cds_environ", default=None)


@contextmanager
def _environment(environ: Mapping[str, str]) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


class _MappingSource(EnvSettingsSource):
    """The ``CDS_*`` variables of a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._mapping = dict(environ)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {key.lower(): value for key, value in self._mapping.items()}


def _describe(exc: ValidationError) -> str:
    """'CDS_PORT: must be ...' for each bad field; pydantic's text, never the input value."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        name = ENV_PREFIX + field.upper() if field else "settings"
        message = MESSAGES.get(field) or _plain(error["msg"])
        problems.append(f"{name} {message}" if field in MESSAGES else f"{name}: {message}")
    return "; ".join(problems)


def _plain(message: str) -> str:
    """pydantic's message without its 'Value error, ' prefix."""
    return message.removeprefix("Value error, ")
