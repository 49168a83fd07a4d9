"""Fetch what the EHR did not prefetch from its FHIR server: concurrent, paged, time-boxed.

EHRs give up on slow services (the spec asks for ~500 ms), so all keys are fetched in
parallel under one deadline per hook call and every blocking step is bounded by it. The
access token is sent only as a Bearer header to the EHR's own server (never to another
host, never over plain http unless allowed) and is never logged or stored. Only allowed
origins are fetched from, and only allowed addresses reached (``egress``). Every failure
looks the same to the caller (``FETCH_FAILED``), whatever went wrong, so the 412 cannot be
used to scan ports or map a network; the log says why, without URL, token or patient data.
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from urllib.parse import urljoin, urlsplit

import orjson
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from cds_service import metrics
from cds_service.config import Settings
from cds_service.errors import CdsError
from cds_service.protocol.egress import CALLER_ISSUER, OriginPolicy
from cds_service.protocol.prefetch import next_link, resources_in
from cds_service.protocol.transport import AddressRefused, Transport

log = logging.getLogger(__name__)


FETCH_FAILED = "could not be fetched from fhirServer"


class FetchError(CdsError):
    """A key could not be fetched. Raised while fetching; the fetcher answers it, per key,
    beside the keys that were fetched. The client is only ever shown ``FETCH_FAILED``;
    ``detail`` (for the log) says why, and ``refused`` marks a URL or address the service
    would not contact (logged as a warning)."""

    def __init__(self, detail: str, refused: bool = False):
        super().__init__(FETCH_FAILED)
        self.detail = detail
        self.refused = refused

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FetchError) and other.detail == self.detail

    def __hash__(self) -> int:
        return hash(self.detail)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"FetchError({self.detail!r})"


TIMED_OUT = "timed out"
# What a client of the FHIR server sees of us; gzip as requests sent it.
BASE_HEADERS = {
    "Accept": "application/fhir+json",
    "Accept-Encoding": "gzip, deflate",
    "User-Agent": "leg-cramp-cds",
}


def expected_type(relative_url: str) -> str:
    """What a query must answer: ``Type/id`` is a read (that Type), anything else a search
    (Bundle)."""
    path, _, query = relative_url.partition("?")
    parts = path.strip("/").split("/")
    if not query and len(parts) == 2 and parts[0][:1].isupper() and parts[1][:1] not in ("_", "$"):
        return parts[0]
    return "Bundle"


def _cooperative() -> bool:
    """True in a gevent worker (threading monkey-patched): greenlets, not thread pools."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


class FhirFetcher:
    """Callable used by ``prefetch.gather``: ``fetcher(server, token, {key: url})``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._origins = OriginPolicy.from_settings(settings)
        self._transport = Transport(
            settings.fhir_pool_size, allow_internal=settings.fhir_internal_addresses_allowed
        )

    def close(self) -> None:
        self._transport.close()

    def check_server(self, server: str, issuer: str | None = None) -> str | None:
        """Why ``server`` may not be used by the caller ``issuer``, or None when it may."""
        try:
            parts = urlsplit(server)
            host = parts.hostname  # raises ValueError on a malformed host such as "[::1"
        except (TypeError, ValueError, AttributeError):
            host = None
        if (
            not host
            or parts.scheme not in ("http", "https")
            or parts.query
            or parts.fragment
            or "@" in parts.netloc
        ):
            return "fhirServer is not an http(s) base URL"
        if parts.scheme == "http" and not self.settings.http_fhir_allowed:
            return "plain-http fhirServer refused (set CDS_ALLOW_HTTP_FHIR=true for development)"
        if not self._origins.allows(server, issuer):
            return (
                "fhirServer origin is not allowed for this client "
                "(CDS_FHIR_ALLOWED_ORIGINS, CDS_FHIR_ALLOWED_ORIGINS_BY_ISSUER)"
            )
        return None

    def __call__(self, server: str, token: str | None, queries: dict[str, str]) -> dict:
        started = time.monotonic()
        refused = self.check_server(server, CALLER_ISSUER.get())
        if refused or not queries:
            return {
                key: self._record(key, FetchError(refused or "no query", refused=True), 0.0)
                for key in queries
            }
        deadline = started + self.settings.fhir_timeout
        base = server.rstrip("/") + "/"
        if _cooperative():
            futures = self._spawn_greenlets(queries, base, token, deadline)
        else:
            futures = self._spawn_threads(queries, base, token, deadline)
        results = {}
        for key, outcome in futures.items():
            result, ended = (
                outcome if outcome is not None else (FetchError(TIMED_OUT), time.monotonic())
            )
            results[key] = self._record(key, result, ended - started)
        return results

    def _spawn_greenlets(self, queries, base, token, deadline) -> dict:
        """Each key in its own greenlet (a gevent worker): no thread to start, and a hung
        server holds only its own greenlets, which end once their socket timeout expires."""
        import gevent

        jobs = {
            key: gevent.spawn(self._fetch_key, key, base, token, url, deadline)
            for key, url in queries.items()
        }
        gevent.joinall(list(jobs.values()), timeout=max(0.0, deadline - time.monotonic()))
        return {key: job.value if job.successful() else None for key, job in jobs.items()}

    def _spawn_threads(self, queries, base, token, deadline) -> dict:
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
        return {
            key: future.result() if future.done() and not future.cancelled() else None
            for key, future in futures.items()
        }

    @staticmethod
    def _record(key: str, result, seconds: float):
        """Metrics per key; the key (not the URL) names it, so labels stay few and PHI-free."""
        name = key.split("#")[0]
        if isinstance(result, FetchError):
            metrics.FHIR_FETCH.labels("error").observe(seconds)
            metrics.FHIR_FETCH_ERRORS.labels(name).inc()
            log.log(
                logging.WARNING if result.refused else logging.INFO,
                "FHIR fetch of %s failed after %.3f s: %s",
                key,
                seconds,
                result.detail,
            )
        else:
            metrics.FHIR_FETCH.labels("ok").observe(seconds)
        return result

    def _fetch_key(self, key: str, base: str, token: str | None, url: str, deadline: float):
        """(every resource of one query | FetchError, monotonic end time); never raises."""
        try:
            result = self._fetch_pages(key, base, token, url, deadline)
        except FetchError as failure:
            result = failure
        except Exception as exc:  # a bug here must not turn into a 500 with a traceback
            log.error("unexpected %s while fetching %s", type(exc).__name__, key)
            result = FetchError(f"unexpected error ({type(exc).__name__})")
        return result, time.monotonic()

    def _fetch_pages(self, key: str, base: str, token: str | None, url: str, deadline: float):
        headers = dict(BASE_HEADERS)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        origin = urlsplit(base)[:2]
        page_url = urljoin(base, url)
        if urlsplit(url).scheme:  # the next link of a prefetched bundle: a search page
            wanted = "Bundle"
        elif page_url.startswith(base):
            wanted = expected_type(url)
        else:  # an id with "../" or "//host" must not take the token elsewhere
            raise FetchError("query leaves the fhirServer base URL", refused=True)
        resources: list[dict] = []
        pages = 0
        while page_url:
            if urlsplit(page_url)[:2] != origin:
                raise FetchError(
                    "next page link points at another server or scheme (refused)", refused=True
                )
            if pages >= self.settings.fhir_max_pages:
                log.warning("%s has more than %d pages (CDS_FHIR_MAX_PAGES)", key, pages)
                raise FetchError(f"more than {pages} pages")
            body = self._get(page_url, headers, deadline)
            if not isinstance(body, dict) or body.get("resourceType") != wanted:
                got = body.get("resourceType") if isinstance(body, dict) else None
                if not (isinstance(got, str) and got.isalnum() and len(got) <= 64):
                    got = None  # only echo something shaped like a FHIR type name
                what = (
                    "an OperationOutcome"
                    if got == "OperationOutcome"
                    else f"{got or 'no resource'}"
                )
                raise FetchError(f"server answered with {what} where a {wanted} was expected")
            if wanted == "Bundle" and body.get("type", "searchset") != "searchset":
                raise FetchError("server answered with a Bundle that is not a searchset")
            resources.extend(resources_in(body))
            pages += 1
            if len(resources) > self.settings.fhir_max_resources:
                log.warning(
                    "%s has more than %d resources (CDS_FHIR_MAX_RESOURCES)",
                    key,
                    self.settings.fhir_max_resources,
                )
                raise FetchError(f"more than {self.settings.fhir_max_resources} resources")
            more = next_link(body) if wanted == "Bundle" else None
            page_url = urljoin(page_url, more) if more else None
        return resources

    def _get(self, url: str, headers: dict, deadline: float):
        """One page as parsed JSON (FetchError if not); no step waits past ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(TIMED_OUT)
        limit = self.settings.max_body_bytes
        response = None
        complete = False
        try:
            response = self._transport.manager(url).request(
                "GET",
                url,
                headers=headers,
                timeout=urllib3.Timeout(connect=remaining, read=remaining),
                preload_content=False,
                redirect=False,
                retries=False,
            )
            status = response.status
            if status in (401, 403):
                raise FetchError(f"server refused the access token (HTTP {status})")
            if status != 200:
                raise FetchError(f"server answered HTTP {status}")
            data = bytearray()
            # read1: whatever one receive brings, so a server dripping a byte at a time
            # meets the deadline check below (a plain read waits for the whole amount).
            while chunk := response.read1(64 * 1024, decode_content=True):
                data += chunk
                if len(data) > limit:
                    raise FetchError(f"page larger than {limit} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(TIMED_OUT)
            complete = True
        except AddressRefused as refused:
            raise FetchError(
                f"fhirServer host resolves to {refused.reason}: refused, nothing sent",
                refused=True,
            ) from None
        except (HTTPError, OSError) as exc:
            # (urllib3's NewConnectionError, a refused connection, is a kind of its timeout)
            timed_out = isinstance(exc, (Urllib3Timeout, TimeoutError)) and not isinstance(
                exc, NewConnectionError
            )
            if timed_out or time.monotonic() >= deadline:
                raise FetchError(TIMED_OUT) from None
            # The names requests gave these, which clients and tests already know.
            kind = "SSLError" if isinstance(exc, SSLError) else "ConnectionError"
            raise FetchError(f"server unreachable ({kind})") from None
        finally:
            if response is not None:
                if complete:
                    response.release_conn()  # read to the end: the connection is reused
                else:
                    response.close()  # unread bytes left: the connection is dropped
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise FetchError("server answered with malformed JSON") from None
