"""Connection pools to the FHIR servers (urllib3), with the proxy and CA settings read once."""

from __future__ import annotations

import os
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import urllib3


def _ca_bundle() -> str:
    """The CA file requests used: REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else certifi's."""
    found = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if found:
        return found
    import certifi

    return certifi.where()


class Transport:
    """Keep-alive connection pools to the FHIR servers, on urllib3 directly.

    requests (used before) re-read the whole process environment for proxy settings and
    a .netrc file on every request, and a hook call makes six of them: about half the CPU
    time of a fetch here (bench/NOTES.md). The environment is read once instead: proxies
    (``HTTPS_PROXY``, ``NO_PROXY`` ...) and the CA bundle as requests read them. No cookies
    are kept and no redirect is followed, so the token only goes where ``fhirServer``
    points; no .netrc credentials are ever sent.
    """

    def __init__(self, pool_size: int):
        # Concurrent calls of a worker (greenlets) each fetch up to pool_size keys at once.
        self._kwargs: dict[str, Any] = {
            "num_pools": 16,
            "maxsize": max(1, pool_size) * 16,
            "block": False,
            "ca_certs": _ca_bundle(),
            "cert_reqs": "CERT_REQUIRED",
        }
        self._proxies = urllib.request.getproxies()
        self._direct = urllib3.PoolManager(**self._kwargs)
        self._managers: dict[tuple[str, str], urllib3.PoolManager] = {}

    def manager(self, url: str) -> urllib3.PoolManager:
        parts = urlsplit(url)
        origin = (parts.scheme, parts.netloc)
        found = self._managers.get(origin)
        if found is None:
            proxy = self._proxies.get(parts.scheme) or self._proxies.get("all")
            if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
                found = urllib3.ProxyManager(proxy, **self._kwargs)
            else:
                found = self._direct
            if len(self._managers) < 256:  # EHR servers are few; never an unbounded cache
                self._managers[origin] = found
        return found

    def close(self) -> None:
        for manager in {id(m): m for m in [self._direct, *self._managers.values()]}.values():
            manager.clear()
