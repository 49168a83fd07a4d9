"""Authentication of CDS clients (CDS Hooks "Security"): JWT verification when enabled."""

from __future__ import annotations

import logging

from cds_service.config import Settings
from cds_service.errors import CdsError

log = logging.getLogger(__name__)


class Authenticator:
    def __init__(self, settings: Settings):
        self.settings = settings
        if settings.auth_mode == "off":
            log.warning("CDS_AUTH_MODE=off: CDS client JWTs are NOT verified (development only)")

    def authenticate(self, authorization: str | None, endpoint_url: str) -> None:
        """Raise a 401 CdsError unless the request carries a JWT from a trusted client."""
        if self.settings.auth_mode == "off":
            return
        raise CdsError(401, "Authentication failed.", headers={"WWW-Authenticate": "Bearer"})
