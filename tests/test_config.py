"""Settings from ``CDS_*`` variables: types, defaults, secrets and start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from cds_service.config import ConfigError, Settings, bundled_cards_dir

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_do_not_read_the_process_environment(monkeypatch):
    monkeypatch.setenv("CDS_PORT", "9999")
    assert Settings.from_env({}).port == 8080
    assert Settings.from_env().port == 9999


def test_values_are_typed_from_strings(tmp_path):
    settings = Settings.from_env(
        {
            "CDS_PORT": "8181",
            "CDS_FHIR_TIMEOUT": "1.5",
            "CDS_ALLOW_HTTP_FHIR": "yes",
            "CDS_METRICS_ENABLED": "off",
            "CDS_CORS_ORIGINS": " https://a.example , https://b.example,",
            "CDS_TRUSTED_ISSUERS": "https://iss.example",
            "CDS_DATA_DIR": str(tmp_path),
            "CDS_CARDS_DIR": str(tmp_path / "cards"),
        }
    )
    assert settings.port == 8181 and settings.fhir_timeout == 1.5
    assert settings.allow_http_fhir is True and settings.metrics_enabled is False
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.trusted_issuers == ("https://iss.example",) and settings.trusted_jku == ()
    assert settings.data_dir == tmp_path and settings.cards_dir == tmp_path / "cards"


def test_overrides_win_over_the_environment():
    environ = {"CDS_TODAY": "2020-01-01", "CDS_WORKERS": "4"}
    settings = Settings.from_env(environ, today="2026-11-24")
    assert (settings.today, settings.workers) == ("2026-11-24", 4)


def test_empty_booleans_are_false_and_http_fhir_follows_the_environment():
    assert Settings.from_env({"CDS_ALLOW_HTTP_FHIR": ""}).http_fhir_allowed is False
    assert Settings.from_env({}).http_fhir_allowed is True  # development
    assert Settings.from_env({"CDS_ENV": "production"}).http_fhir_allowed is False


def test_the_rules_default_to_the_ones_shipped_in_the_package():
    settings = Settings.from_env({})
    assert settings.cards_dir == bundled_cards_dir()
    assert (settings.cards_dir / "common.yaml").is_file()
    # An editable install maps the package onto the repository's cards/ (a wheel has a copy).
    shipped = (settings.cards_dir / "common.yaml").read_bytes()
    assert shipped == (ROOT / "cards" / "common.yaml").read_bytes()


def test_data_dir_defaults_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).data_dir == tmp_path / "data"


def test_secrets_are_hidden_but_usable():
    url = "postgresql+psycopg://cds:hunter2@db.example/cds"
    settings = Settings.from_env({"CDS_DATABASE_URL": url, "CDS_PATIENT_HASH_SALT": "pepper"})
    assert isinstance(settings.database_url, SecretStr)
    assert isinstance(settings.patient_hash_salt, SecretStr)
    assert "hunter2" not in repr(settings) and "pepper" not in repr(settings)
    assert settings.effective_database_url == url
    assert settings.patient_hash_salt.get_secret_value() == "pepper"
    overridden = Settings.from_env({}, patient_hash_salt="s3cret")
    assert overridden.patient_hash_salt.get_secret_value() == "s3cret"


def test_default_database_is_sqlite_in_the_data_dir(tmp_path):
    settings = Settings.from_env({}, data_dir=tmp_path)
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'cds.sqlite3'}"


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("CDS_PORT", "eighty", "CDS_PORT: "),
        ("CDS_PORT", "0", "CDS_PORT: "),
        ("CDS_WORKERS", "0", "CDS_WORKERS: "),
        ("CDS_FHIR_POOL_SIZE", "0", "CDS_FHIR_POOL_SIZE: "),
        ("CDS_FHIR_MAX_PAGES", "0", "CDS_FHIR_MAX_PAGES: "),
        ("CDS_FHIR_MAX_RESOURCES", "0", "CDS_FHIR_MAX_RESOURCES: "),
        ("CDS_MAX_BODY_BYTES", "0", "CDS_MAX_BODY_BYTES: "),
        ("CDS_FHIR_TIMEOUT", "0", "CDS_FHIR_TIMEOUT: "),
        ("CDS_ALLOW_HTTP_FHIR", "perhaps", "CDS_ALLOW_HTTP_FHIR: "),
        ("CDS_AUTH_MODE", "maybe", "CDS_AUTH_MODE must be 'off' or 'jwt'"),
        ("CDS_LOG_LEVEL", "loud", "CDS_LOG_LEVEL must be DEBUG"),
        ("CDS_TODAY", "2026-13-01", "CDS_TODAY must be an ISO date"),
        ("CDS_DATABASE_URL", "mysql://cds:pw@db/cds", "CDS_DATABASE_URL must be a sqlite"),
        ("CDS_DATABASE_URL", "nosuchdialect://x", "CDS_DATABASE_URL must be a sqlite"),
    ],
)
def test_unusable_values_raise_config_error_naming_the_variable(variable, value, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value).startswith(message)
    if len(value) > 1:  # the message says what is wrong, it does not echo the value
        assert value not in str(caught.value)


def test_a_bad_secret_is_named_without_its_value():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({}, patient_hash_salt=["hunter2"])
    assert "CDS_PATIENT_HASH_SALT" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_unknown_setting_in_overrides_is_refused():
    with pytest.raises(ConfigError, match="CDS_NO_SUCH_THING"):
        Settings.from_env({}, no_such_thing=1)


def test_unrelated_cds_variables_are_ignored():
    environ = {"CDS_TEST_POSTGRES_URL": "postgresql://x", "CDS_CI_POSTGRES": "1"}
    assert Settings.from_env(environ).port == 8080


def test_settings_are_immutable():
    settings = Settings.from_env({})
    with pytest.raises(Exception):  # noqa: B017 (pydantic's ValidationError)
        settings.port = 1  # type: ignore[misc]


def test_a_database_url_with_a_port_that_is_not_a_number_stops_start_up_without_its_secret():
    """Checked with the configuration: the store opens in the background, after the first
    answer, where a ConfigError would leave the service running without one."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CDS_DATABASE_URL": "postgresql+psycopg://cds:s3cret@db:notaport/x"})
    assert str(caught.value).startswith("CDS_DATABASE_URL must be a sqlite:///")
    assert "s3cret" not in str(caught.value)
