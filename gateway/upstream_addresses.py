"""Which addresses an HTTP/SSE upstream may have: the gateway connects wherever a server's URL points, so a URL aimed at
the host's cloud metadata service (169.254.169.254, fd00:ec2::254, metadata.google.internal) would hand whoever may
register servers the host's cloud credentials.

Every address falls in one kind:

    public      globally routable
    private     10/8, 172.16/12, 192.168/16, 100.64/10 (shared), fc00::/7 (unique local), fec0::/10
    loopback    127/8, ::1 (a local MCP server, the common case)
    link-local  169.254/16, fe80::/10
    metadata    cloud metadata and host services, by address or name (checked before the kinds above, so
                fd00:ec2::254 is metadata although it lies in fc00::/7)
    reserved    anything else (unspecified, multicast, broadcast, documentation, 240/4, ...): never allowed

`PORTCULLIS_UPSTREAM_ADDRESSES` lists the kinds allowed (default public,private,loopback). An IP literal is checked
as written (IPv4-mapped and NAT64 IPv6 forms by the IPv4 address inside); the legacy IPv4 forms that resolvers accept
(2130706433, 0x7f000001, 0177.0.0.1, 127.1) are refused, naming the dotted form to write instead, because libraries
disagree on what they mean. A host name is resolved and every address it resolves to must be allowed. Registration
checks with `check_url` (a name that does not resolve yet is accepted: it cannot be reached either), and every
connection is checked again just before it opens (`check_url_before_connecting`), so a DNS change is caught too.

Only the standard library and Django's settings (read when called).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

KINDS = ("public", "private", "loopback", "link-local", "metadata")
DEFAULT_KINDS = ("public", "private", "loopback")
SETTING = "PORTCULLIS_UPSTREAM_ADDRESSES"

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, ... instance metadata
    "169.254.170.2",    # AWS ECS task metadata and credentials
    "fd00:ec2::254",    # AWS instance metadata over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",    # Azure wire server
))
METADATA_NAMES = frozenset(("metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal"))
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fec0::/10"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")

_NUMBER = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)")


class AddressRefused(ValueError):
    """The URL's host is not an allowed upstream address; the message says why and what to do."""


def allowed_kinds() -> frozenset[str]:
    from django.conf import settings

    return frozenset(getattr(settings, SETTING, DEFAULT_KINDS))


def kind_of(address: Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return kind_of(address.ipv4_mapped)
        if address in NAT64:
            return kind_of(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
    if address in METADATA_ADDRESSES:
        return "metadata"
    if address.is_unspecified or address.is_multicast:
        return "reserved"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if any(address in network for network in PRIVATE_NETWORKS):
        return "private"
    if address.is_global:
        return "public"
    return "reserved"


def literal(host: str) -> Address | None:
    """The address a URL's host (as urlsplit().hostname gives it) writes, or None for a host name.

    Refuses the legacy IPv4 forms (a host whose last label is a number but that is not a dotted quad)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # "127.0.0.1." is still an address
    if not _NUMBER.fullmatch(labels[-1]):
        return None
    dotted = _legacy_ipv4(labels)
    if dotted is None:
        raise AddressRefused(f"{host!r} is neither a host name nor an IPv4 address: write the address as four "
                             f"decimal numbers, e.g. 192.168.1.20")
    if host.rstrip(".") == dotted:
        return ipaddress.IPv4Address(dotted)
    raise AddressRefused(f"{host!r} is an IPv4 address in a legacy form that libraries read differently: write it "
                         f"as {dotted}")


def _legacy_ipv4(labels: list[str]) -> str | None:
    """What inet_aton(3) makes of 1-4 numbers (decimal, 0x hex, 0 octal), the last one filling the rest."""
    if not 1 <= len(labels) <= 4:
        return None
    numbers = []
    for label in labels:
        if not _NUMBER.fullmatch(label):
            return None
        try:
            if label[:2].lower() == "0x":
                numbers.append(int(label[2:] or "0", 16))
            elif len(label) > 1 and label.startswith("0"):
                numbers.append(int(label, 8))
            else:
                numbers.append(int(label))
        except ValueError:  # 08, 09: not octal
            return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for position, number in enumerate(head):
        value += number << (8 * (3 - position))
    return str(ipaddress.IPv4Address(value))


def host_and_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise AddressRefused(f"{url!r} is not an http:// or https:// URL with a host")
    if "%" in host and ":" not in host:
        raise AddressRefused(f"write the host {host!r} without percent-encoding")
    try:
        port = parts.port
    except ValueError:
        raise AddressRefused(f"the port of {url!r} is not a number between 0 and 65535") from None
    return host, port or (443 if parts.scheme == "https" else 80)


def check_addresses(host: str, addresses: Iterable[Address], allowed: frozenset[str]) -> None:
    """Refuse unless every address is of an allowed kind (the first refused one is named)."""
    for address in addresses:
        kind = kind_of(address)
        if kind in allowed:
            continue
        where = str(address) if str(address) == host else f"{host} (resolves to {address})"
        raise AddressRefused(_refusal(where, kind, allowed))


def _refusal(where: str, kind: str, allowed: frozenset[str]) -> str:
    now = ",".join(k for k in KINDS if k in allowed) or "nothing"
    if kind == "reserved":
        return (f"{where} is a reserved address (unspecified, multicast, broadcast or not routable), never an "
                f"upstream: point the URL at the MCP server itself")
    why = " (an upstream there could read the gateway host's cloud credentials)" if kind == "metadata" else ""
    return (f"{where} is a {kind} address{why}; upstream addresses allowed: {now}. Point the URL at the MCP "
            f"server itself, or have an administrator add {kind} to {SETTING}")


def _named_metadata(host: str, allowed: frozenset[str]) -> None:
    if host.rstrip(".").lower() in METADATA_NAMES and "metadata" not in allowed:
        raise AddressRefused(_refusal(host, "metadata", allowed))


def _resolved(infos) -> list[Address]:
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def _needs_resolving(url: str, allowed: frozenset[str] | None) -> tuple[str, int, frozenset[str]] | None:
    """The checks that need no resolver (a metadata name, an address literal); the host, port and allowed kinds
    when the name must still be resolved, else None."""
    allowed = allowed_kinds() if allowed is None else allowed
    host, port = host_and_port(url)
    _named_metadata(host, allowed)
    address = literal(host)
    if address is not None:
        check_addresses(host, [address], allowed)
        return None
    return host, port, allowed


def check_url(url: str, allowed: frozenset[str] | None = None) -> None:
    """At registration: refuse a URL whose host is, or resolves to, an address of a kind not allowed."""
    if (todo := _needs_resolving(url, allowed)) is None:
        return
    host, port, allowed = todo
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return  # not resolvable now: nothing can be reached either; checked again before every connection
    check_addresses(host, _resolved(infos), allowed)


async def check_url_before_connecting(url: str, allowed: frozenset[str] | None = None) -> None:
    """Just before a connection opens: the same rule, and a name that does not resolve is refused too."""
    if (todo := _needs_resolving(url, allowed)) is None:
        return
    host, port, allowed = todo
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(f"cannot resolve {host!r} ({exc}): check the server's URL") from None
    check_addresses(host, _resolved(infos), allowed)
