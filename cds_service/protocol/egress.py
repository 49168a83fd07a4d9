"""Where the FHIR client may go: the allowed ``fhirServer`` origins, and addresses never reached.

A hook request names its own ``fhirServer`` and the service sends it the caller's token, so
an unchecked URL would let any caller make the service read a cloud metadata endpoint or
probe the internal network. Two checks guard it:

- the origin must be on the caller's list: ``CDS_FHIR_ALLOWED_ORIGINS``, or in JWT mode the
  verified issuer's entry in ``CDS_FHIR_ALLOWED_ORIGINS_BY_ISSUER`` (development default:
  loopback origins; otherwise none);
- every connection resolves the host and refuses link-local, metadata, unspecified,
  multicast and broadcast addresses always, loopback and private ones outside development.
  ``transport.py`` connects to exactly the addresses checked here, so a name that answers
  differently the second time (DNS rebinding) cannot slip through.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from cds_service.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddrInfo = tuple[Any, ...]  # one row of socket.getaddrinfo

DEFAULT_PORTS = {"http": 80, "https": 443}
# Development default: the service's own machine, any port (tests, a local FHIR server).
LOOPBACK_ORIGINS = tuple(
    f"{scheme}://{host}:*"
    for scheme in ("http", "https")
    for host in ("127.0.0.1", "localhost", "[::1]")
)
# Instance metadata services (AWS, ECS, AWS IPv6, Alibaba, Oracle legacy). Most are link-local
# anyway; the others sit in ranges development allows, so they are named.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# IPv6 forms that carry an IPv4 address or are deprecated, which ``ipaddress`` calls global:
# IPv4-compatible (::/96), SIIT (::ffff:0:0/96), local-use NAT64 (RFC 8215) and site-local.
# Internal (development only), and the IPv4 address they carry is checked too.
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
SITE_LOCAL = ipaddress.ip_network("fec0::/10")
NOT_GLOBAL_IPV6 = (IPV4_COMPATIBLE, SIIT, LOCAL_NAT64, SITE_LOCAL)
# Where RFC 6052 puts the IPv4 address after a NAT64 prefix of each length a local-use
# prefix can have: (shift, width) bit fields from the right, most significant first.
_NAT64_FIELDS = {
    48: ((64, 16), (40, 16)),
    56: ((64, 8), (32, 24)),
    64: ((24, 32),),
    96: ((0, 32),),
}
BROADCAST = ipaddress.ip_address("255.255.255.255")

# The verified JWT ``iss`` of the call being answered (None: auth off, or no call). Set by
# the HTTP layer once the client is authenticated; it selects the caller's origin list.
CALLER_ISSUER: ContextVar[str | None] = ContextVar("cds_caller_issuer", default=None)


class RefusedAddress(Exception):
    """A host resolves to (or is named as) an address the service never connects to. The
    message names the kind of address only, never the address or the host."""


@dataclass(frozen=True)
class Origin:
    """scheme://host:port; ``port`` None (only in an allow-list entry) means any port."""

    scheme: str
    host: str  # lower case, IPv6 without brackets, no trailing dot
    port: int | None

    def allows(self, other: Origin) -> bool:
        return (
            self.scheme == other.scheme
            and self.host == other.host
            and (self.port is None or self.port == other.port)
        )


def origin_of(url: str) -> Origin | None:
    """The origin of an http(s) URL; None when it has none, or carries user info."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except (TypeError, ValueError):  # a malformed host ("[::1") or port
        return None
    if parts.scheme not in DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    return Origin(parts.scheme, host.rstrip("."), port or DEFAULT_PORTS[parts.scheme])


def parse_allowed_origin(entry: str) -> Origin:
    """One allow-list entry, ``scheme://host[:port]`` with ``:*`` for any port; ValueError
    for anything else (a path, a query, user info, another scheme)."""
    any_port = entry.endswith(":*")
    text = (entry[:-2] if any_port else entry).rstrip("/")
    origin = origin_of(text)
    parts = urlsplit(text)
    if origin is None or parts.path or parts.query or parts.fragment or text.endswith("#"):
        raise ValueError(f"{entry!r} is not an origin (scheme://host[:port], port may be *)")
    if any_port:
        if parts.port is not None:
            raise ValueError(f"{entry!r} gives two ports")
        return Origin(origin.scheme, origin.host, None)
    return origin


def parse_origins_by_issuer(text: str) -> dict[str, tuple[str, ...]]:
    """``{"<iss>": ["<origin>", ...], ...}`` (JSON); empty text is no entries. Each origin
    is checked; ValueError says what is wrong."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("must be a JSON object {issuer: [origin, ...]}") from None
    if not isinstance(value, dict) or not all(
        isinstance(origins, list) and all(isinstance(o, str) for o in origins)
        for origins in value.values()
    ):
        raise ValueError("must be a JSON object {issuer: [origin, ...]}")
    for origins in value.values():
        for entry in origins:
            parse_allowed_origin(entry)
    return {issuer: tuple(origins) for issuer, origins in value.items()}


class OriginPolicy:
    """Which ``fhirServer`` origins a caller may have fetched from."""

    def __init__(self, default: tuple[str, ...], by_issuer: Mapping[str, tuple[str, ...]]):
        self.default = tuple(parse_allowed_origin(entry) for entry in default)
        self.by_issuer = {
            issuer: tuple(parse_allowed_origin(entry) for entry in entries)
            for issuer, entries in by_issuer.items()
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> OriginPolicy:
        default = settings.fhir_allowed_origins
        if default is None:
            default = LOOPBACK_ORIGINS if settings.env == "development" else ()
        by_issuer = settings.fhir_allowed_origins_by_issuer if settings.auth_mode == "jwt" else {}
        return cls(default, by_issuer)

    def allows(self, url: str, issuer: str | None) -> bool:
        """Is ``url``'s origin on the list of this caller (its issuer's, else the default)?"""
        origin = origin_of(url)
        if origin is None:
            return False
        rules = self.by_issuer.get(issuer, self.default) if issuer is not None else self.default
        return any(rule.allows(origin) for rule in rules)


def _embedded_ipv4(address: IPAddress) -> list[IPAddress]:
    """IPv4 addresses an IPv6 address carries (mapped, IPv4-compatible, SIIT, NAT64 and
    local-use NAT64 at each prefix length, 6to4): each is checked too."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[IPAddress] = [a for a in (address.ipv4_mapped, address.sixtofour) if a]
    value = int(address)
    if address in NAT64 or address in SIIT or (address in IPV4_COMPATIBLE and value > 1):
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address in LOCAL_NAT64:
        found.extend(_local_nat64_ipv4(value))
    return found


def _local_nat64_ipv4(value: int) -> list[IPAddress]:
    """The IPv4 address under each prefix length whose layout fits (RFC 6052: below /96 the
    octet after bit 64 and the bits after the address are zero). Zero bits read under a
    layout that was not used (0.0.0.0) are no address, not an unspecified one."""
    found: list[IPAddress] = []
    for length, fields in _NAT64_FIELDS.items():
        suffix_bits = min(shift for shift, _width in fields)
        if length < 96 and ((value >> 56) & 0xFF or value & ((1 << suffix_bits) - 1)):
            continue
        embedded = 0
        for shift, width in fields:
            embedded = (embedded << width) | ((value >> shift) & ((1 << width) - 1))
        if embedded:
            found.append(ipaddress.IPv4Address(embedded))
    return found


def _is_global(address: IPAddress) -> bool:
    return address.is_global and not any(address in net for net in NOT_GLOBAL_IPV6)


def address_refusal(address: IPAddress, allow_internal: bool) -> str | None:
    """Why ``address`` is never connected to (the kind of address), or None."""
    for candidate in [address, *_embedded_ipv4(address)]:
        if candidate in METADATA_ADDRESSES:
            return "a cloud metadata address"
        if candidate.is_link_local:
            return "a link-local address"
        if candidate.is_unspecified or candidate.is_multicast or candidate == BROADCAST:
            return "an unspecified, multicast or broadcast address"
        if isinstance(candidate, ipaddress.IPv4Address) and candidate.is_reserved:
            return "a reserved address"
        if not (_is_global(candidate) or allow_internal):
            return "a loopback or private address (allowed in development only)"
    return None


def resolve_checked(host: str, port: int, family: int, allow_internal: bool) -> list[AddrInfo]:
    """``socket.getaddrinfo`` rows for ``host``, every one of them allowed; RefusedAddress
    if the name or any address is refused (a name that also points inward is not used)."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_NAMES:
        raise RefusedAddress("a cloud metadata name")
    rows = socket.getaddrinfo(name, port, family, socket.SOCK_STREAM)
    for row in rows:
        reason = address_refusal(ipaddress.ip_address(row[4][0]), allow_internal)
        if reason:
            raise RefusedAddress(reason)
    return rows
