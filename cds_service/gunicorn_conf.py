"""gunicorn settings taken from the same CDS_* variables as the rest of the service."""

from cds_service.config import Settings

_settings = Settings.from_env()
bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
worker_class = "gthread"
threads = 4
timeout = 30
accesslog = None
