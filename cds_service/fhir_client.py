"""Fetch what the EHR did not prefetch from its FHIR server: concurrent, paged, time-boxed.

The access token is sent as a Bearer header and never logged or stored. Every failure is
reported per key as a short reason without the URL, token or any patient data.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from urllib.parse import urljoin, urlsplit

import requests

from cds_service.config import Settings
from cds_service.prefetch import next_link, resources_in

log = logging.getLogger(__name__)


class FetchFailure(str):
    """Why a key could not be fetched (safe to show to the client)."""


class FhirFetcher:
    """Callable used by ``prefetch.gather``: ``fetcher(server, token, {key: url})``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=settings.fhir_pool_size,
                                        thread_name_prefix="fhir-fetch")

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=4)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._local.session = session
        return session

    def check_server(self, server: str) -> str | None:
        """Why ``server`` may not be used, or None when it may."""
        parts = urlsplit(server)
        if parts.scheme == "https" and parts.netloc:
            return None
        if parts.scheme == "http" and parts.netloc and self.settings.http_fhir_allowed:
            return None
        if parts.scheme == "http" and parts.netloc:
            return "plain-http fhirServer refused (set CDS_ALLOW_HTTP_FHIR=true for development)"
        return "fhirServer is not an http(s) URL"

    def __call__(self, server: str, token: str | None, queries: dict[str, str]) -> dict:
        refused = self.check_server(server)
        if refused:
            return {key: FetchFailure(refused) for key in queries}
        deadline = time.monotonic() + self.settings.fhir_timeout
        base = server.rstrip("/") + "/"
        futures = {key: self._pool.submit(self._fetch_key, base, token, url, deadline)
                   for key, url in queries.items()}
        wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()) + 0.05)
        results = {}
        for key, future in futures.items():
            if not future.done():
                future.cancel()
                results[key] = FetchFailure("timed out")
                continue
            results[key] = future.result()
        return results

    def _fetch_key(self, base: str, token: str | None, url: str, deadline: float):
        """Every page of one query, or a FetchFailure."""
        headers = {"Accept": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        resources: list[dict] = []
        pages = 0
        next_url: str | None = urljoin(base, url)
        origin = urlsplit(base).netloc
        while next_url:
            if urlsplit(next_url).netloc != origin:
                return FetchFailure("next page points at another server")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return FetchFailure("timed out")
            try:
                response = self._session().get(next_url, headers=headers,
                                               timeout=(min(remaining, 2.0), remaining))
            except requests.Timeout:
                return FetchFailure("timed out")
            except requests.RequestException as exc:
                return FetchFailure(f"server unreachable ({type(exc).__name__})")
            if response.status_code in (401, 403):
                return FetchFailure(f"server refused the access token (HTTP {response.status_code})")
            if response.status_code != 200:
                return FetchFailure(f"server answered HTTP {response.status_code}")
            try:
                body = response.json()
            except ValueError:
                return FetchFailure("server answered with malformed JSON")
            if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
                return FetchFailure("server answered with something that is not a FHIR resource")
            if body["resourceType"] == "OperationOutcome":
                return FetchFailure("server answered with an OperationOutcome")
            resources.extend(resources_in(body))
            pages += 1
            if len(resources) > self.settings.fhir_max_resources:
                return FetchFailure("too many resources")
            next_url = next_link(body)
            if next_url and pages >= self.settings.fhir_max_pages:
                log.warning("stopped following next links after %d pages", pages)
                break
        return resources
