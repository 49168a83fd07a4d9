"""Fetch what the EHR did not prefetch from its FHIR server: concurrent, paged, time-boxed.

EHRs give up on slow services (the spec asks for ~500 ms), so all keys are fetched in
parallel under one deadline per hook call and every blocking step is bounded by it. The
access token is sent only as a Bearer header to the EHR's own server (never to another
host, never over plain http unless allowed) and is never logged or stored. A failure is
reported per key as a short reason without URL, token or patient data, because it ends
up in the 412 body and in logs.
"""

from __future__ import annotations

import http.cookiejar
import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait
from urllib.parse import urljoin, urlsplit

import orjson
import requests

from cds_service import metrics
from cds_service.config import Settings
from cds_service.prefetch import next_link, resources_in

log = logging.getLogger(__name__)


class FetchFailure(str):
    """Why a key could not be fetched (safe to show to the client)."""


TIMED_OUT = FetchFailure("timed out")


def expected_type(relative_url: str) -> str:
    """What a query must answer: ``Type/id`` is a read (that Type), anything else a search
    (Bundle)."""
    path, _, query = relative_url.partition("?")
    parts = path.strip("/").split("/")
    if not query and len(parts) == 2 and parts[0][:1].isupper() and parts[1][:1] not in ("_", "$"):
        return parts[0]
    return "Bundle"


class BearerAuth(requests.auth.AuthBase):
    """Sends the token as ``Authorization: Bearer``; as an explicit ``auth`` it also stops
    requests from replacing the header with credentials from a ``.netrc`` file."""

    def __init__(self, token: str):
        self._token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(<redacted>)"


def new_session(pool_size: int) -> requests.Session:
    """One session per fetcher: keep-alive connections reused across keys, pages and calls.

    Cookies are refused so no state from one EHR user's call leaks into the next; redirects
    are not followed (see ``_get``), so the token only goes where ``fhirServer`` points.
    """
    session = requests.Session()
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    # Each worker thread may run a hook call with ``pool_size`` fetches at once.
    adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=max(1, pool_size) * 4)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class FhirFetcher:
    """Callable used by ``prefetch.gather``: ``fetcher(server, token, {key: url})``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._session = new_session(settings.fhir_pool_size)

    def close(self) -> None:
        self._session.close()

    def check_server(self, server: str) -> str | None:
        """Why ``server`` may not be used, or None when it may."""
        try:
            parts = urlsplit(server)
            host = parts.hostname  # raises ValueError on a malformed host such as "[::1"
        except (TypeError, ValueError, AttributeError):
            host = None
        if not host or parts.scheme not in ("http", "https") or parts.query or parts.fragment:
            return "fhirServer is not an http(s) base URL"
        if parts.scheme == "http" and not self.settings.http_fhir_allowed:
            return "plain-http fhirServer refused (set CDS_ALLOW_HTTP_FHIR=true for development)"
        return None

    def __call__(self, server: str, token: str | None, queries: dict[str, str]) -> dict:
        started = time.monotonic()
        refused = self.check_server(server)
        if refused or not queries:
            return {key: self._record(key, FetchFailure(refused), 0.0) for key in queries}
        deadline = started + self.settings.fhir_timeout
        base = server.rstrip("/") + "/"
        # A pool per call: a hung server can only hold its own call's threads, never delay
        # another EHR's call; stragglers end on their own once their socket timeout expires.
        pool = ThreadPoolExecutor(
            max_workers=min(self.settings.fhir_pool_size, len(queries)),
            thread_name_prefix="fhir-fetch",
        )
        try:
            futures = {
                key: pool.submit(self._fetch_key, key, base, token, url, deadline)
                for key, url in queries.items()
            }
            wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        results = {}
        for key, future in futures.items():
            if future.done() and not future.cancelled():
                result, ended = future.result()
            else:
                result, ended = TIMED_OUT, time.monotonic()
            results[key] = self._record(key, result, ended - started)
        return results

    @staticmethod
    def _record(key: str, result, seconds: float):
        """Metrics per key; the key (not the URL) names it, so labels stay few and PHI-free."""
        name = key.split("#")[0]
        if isinstance(result, FetchFailure):
            metrics.FHIR_FETCH.labels("error").observe(seconds)
            metrics.FHIR_FETCH_ERRORS.labels(name).inc()
            log.info("FHIR fetch of %s failed after %.3f s: %s", key, seconds, result)
        else:
            metrics.FHIR_FETCH.labels("ok").observe(seconds)
        return result

    def _fetch_key(self, key: str, base: str, token: str | None, url: str, deadline: float):
        """(every resource of one query | FetchFailure, monotonic end time); never raises."""
        try:
            result = self._fetch_pages(key, base, token, url, deadline)
        except Exception as exc:  # a bug here must not turn into a 500 with a traceback
            log.error("unexpected %s while fetching %s", type(exc).__name__, key)
            result = FetchFailure(f"unexpected error ({type(exc).__name__})")
        return result, time.monotonic()

    def _fetch_pages(self, key: str, base: str, token: str | None, url: str, deadline: float):
        headers = {"Accept": "application/fhir+json"}
        auth = BearerAuth(token) if token else None
        origin = urlsplit(base)[:2]
        page_url = urljoin(base, url)
        if urlsplit(url).scheme:  # the next link of a prefetched bundle: a search page
            wanted = "Bundle"
        elif page_url.startswith(base):
            wanted = expected_type(url)
        else:  # an id with "../" or "//host" must not take the token elsewhere
            return FetchFailure("query leaves the fhirServer base URL")
        resources: list[dict] = []
        pages = 0
        while page_url:
            if urlsplit(page_url)[:2] != origin:
                return FetchFailure("next page link points at another server or scheme (refused)")
            if pages >= self.settings.fhir_max_pages:
                log.warning("%s has more than %d pages (CDS_FHIR_MAX_PAGES)", key, pages)
                return FetchFailure(f"more than {pages} pages")
            body = self._get(page_url, headers, auth, deadline)
            if isinstance(body, FetchFailure):
                return body
            if not isinstance(body, dict) or body.get("resourceType") != wanted:
                got = body.get("resourceType") if isinstance(body, dict) else None
                if not (isinstance(got, str) and got.isalnum() and len(got) <= 64):
                    got = None  # only echo something shaped like a FHIR type name
                what = (
                    "an OperationOutcome"
                    if got == "OperationOutcome"
                    else f"{got or 'no resource'}"
                )
                return FetchFailure(f"server answered with {what} where a {wanted} was expected")
            if wanted == "Bundle" and body.get("type", "searchset") != "searchset":
                return FetchFailure("server answered with a Bundle that is not a searchset")
            resources.extend(resources_in(body))
            pages += 1
            if len(resources) > self.settings.fhir_max_resources:
                log.warning(
                    "%s has more than %d resources (CDS_FHIR_MAX_RESOURCES)",
                    key,
                    self.settings.fhir_max_resources,
                )
                return FetchFailure(f"more than {self.settings.fhir_max_resources} resources")
            more = next_link(body) if wanted == "Bundle" else None
            page_url = urljoin(page_url, more) if more else None
        return resources

    def _get(self, url: str, headers: dict, auth, deadline: float):
        """One page as parsed JSON, or a FetchFailure; no step waits past ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return TIMED_OUT
        limit = self.settings.max_body_bytes
        try:
            with self._session.get(
                url,
                headers=headers,
                auth=auth,
                timeout=(remaining, remaining),
                stream=True,
                allow_redirects=False,
            ) as response:
                status = response.status_code
                if status in (401, 403):
                    return FetchFailure(f"server refused the access token (HTTP {status})")
                if status != 200:
                    return FetchFailure(f"server answered HTTP {status}")
                data = bytearray()
                # read1: whatever one receive brings, so a server dripping a byte at a time
                # meets the deadline check below (iter_content waits for a full 64 KiB).
                raw = response.raw
                while chunk := raw.read1(64 * 1024, decode_content=True):
                    data += chunk
                    if len(data) > limit:
                        return FetchFailure(f"page larger than {limit} bytes")
                    if time.monotonic() > deadline:
                        return TIMED_OUT
        except requests.RequestException as exc:
            if isinstance(exc, requests.Timeout) or time.monotonic() >= deadline:
                return TIMED_OUT
            return FetchFailure(f"server unreachable ({type(exc).__name__})")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return FetchFailure("server answered with malformed JSON")
