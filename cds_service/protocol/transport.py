"""Connection pools to the FHIR servers (urllib3), with the proxy and CA settings read once.

Every new connection resolves the host itself, checks each address (``egress``) and connects
to exactly those addresses, so what was checked is what is reached.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from cds_service.protocol.egress import AddrInfo, RefusedAddress, resolve_checked


class AddressRefused(NewConnectionError):
    """No connection was made: the host resolves to an address the service never reaches.
    ``reason`` is the kind of address (``egress.address_refusal``), for the log."""

    def __init__(self, conn: Any, reason: str):
        self.reason = reason
        super().__init__(conn, f"address refused: {reason}")


def _ca_bundle() -> str:
    """The CA file requests used: REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else certifi's."""
    found = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if found:
        return found
    import certifi

    return certifi.where()


def _connect_first(
    rows: list[AddrInfo], timeout: Any, source_address: Any, options: Any
) -> socket.socket:
    """A socket connected to the first of ``rows`` that answers (as urllib3 does, but
    without resolving the name again)."""
    error: OSError = OSError("no address to connect to")
    for family, kind, proto, _, address in rows:
        sock = socket.socket(family, kind, proto)
        try:
            for option in options or ():
                sock.setsockopt(*option)
            if timeout is None or isinstance(timeout, (int, float)):
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(address)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
    raise error


class _CheckedConnection(HTTPConnection):
    """An HTTP connection that only reaches addresses ``egress`` allows."""

    allow_internal = False  # loopback and private addresses (development)

    def _new_conn(self) -> socket.socket:
        try:
            rows = resolve_checked(
                self._dns_host, self.port, allowed_gai_family(), self.allow_internal
            )
        except RefusedAddress as refused:
            raise AddressRefused(self, str(refused)) from None
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        try:
            sock = _connect_first(rows, self.timeout, self.source_address, self.socket_options)
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, "connection timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock


class _CheckedHTTPSConnection(_CheckedConnection, HTTPSConnection):
    """TLS over a checked connection: the certificate is still verified for the host name."""


def checked_pools(allow_internal: bool) -> dict[str, type[HTTPConnectionPool]]:
    """Pool classes (for ``PoolManager.pool_classes_by_scheme``) whose connections are
    checked, with or without loopback and private addresses."""

    class Plain(_CheckedConnection):
        pass

    class Tls(_CheckedHTTPSConnection):
        pass

    Plain.allow_internal = Tls.allow_internal = allow_internal

    class PlainPool(HTTPConnectionPool):
        ConnectionCls = Plain

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = Tls

    return {"http": PlainPool, "https": TlsPool}


class Transport:
    """Keep-alive connection pools to the FHIR servers, on urllib3 directly.

    requests (used before) re-read the whole process environment for proxy settings and
    a .netrc file on every request, and a hook call makes six of them: about half the CPU
    time of a fetch here (bench/NOTES.md). The environment is read once instead: proxies
    (``HTTPS_PROXY``, ``NO_PROXY`` ...) and the CA bundle as requests read them. No cookies
    are kept and no redirect is followed, so the token only goes where ``fhirServer``
    points; no .netrc credentials are ever sent.

    Direct connections are checked as they are made. Through a proxy, the proxy resolves
    the name, so the name is resolved and checked here before each request instead (the
    proxy should refuse internal addresses itself too).
    """

    def __init__(self, pool_size: int, allow_internal: bool = False):
        # Concurrent calls of a worker (greenlets) each fetch up to pool_size keys at once.
        self._kwargs: dict[str, Any] = {
            "num_pools": 16,
            "maxsize": max(1, pool_size) * 16,
            "block": False,
            "ca_certs": _ca_bundle(),
            "cert_reqs": "CERT_REQUIRED",
        }
        self._allow_internal = allow_internal
        self._proxies = urllib.request.getproxies()
        self._direct = urllib3.PoolManager(**self._kwargs)
        self._direct.pool_classes_by_scheme = checked_pools(allow_internal)
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
        if found is not self._direct:
            self._check_proxied(
                parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
            )
        return found

    def _check_proxied(self, host: str, port: int) -> None:
        try:
            resolve_checked(host, port, socket.AF_UNSPEC, self._allow_internal)
        except RefusedAddress as refused:
            raise AddressRefused(None, str(refused)) from None

    def close(self) -> None:
        for manager in {id(m): m for m in [self._direct, *self._managers.values()]}.values():
            manager.clear()
