"""Which URLs a workspace may fetch data from: the one policy used twice.

Validation applies `check_url` to what users write; `runtime.data fetch` applies it again
and then `check_address` to every address the host name resolves to, right before it
connects, so DNS that points a public-looking name at 127.0.0.1 or the cloud metadata
service is refused too. Standard library only: this runs inside workload containers.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "metadata",
    }
)


class URLRefused(ValueError):
    """The URL or the address it resolves to is not allowed."""


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> None:
    """Refuse loopback, private, link-local (cloud metadata lives there) and other non-public addresses."""
    ip = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        else:
            # 6to4 and Teredo addresses carry an IPv4 address that the traffic may be delivered to;
            # the IPv6 address itself is still checked below (Teredo's prefix is not public, for one)
            embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
            if embedded is not None:
                check_address(embedded)
    what = None
    if ip.is_loopback:
        what = "a loopback address"
    elif ip.is_link_local:
        what = "a link-local address (where cloud metadata services answer)"
    elif ip.is_private:
        what = "a private address"
    elif ip.is_unspecified:
        what = "an unspecified address"
    elif ip.is_multicast or ip.is_reserved:
        what = "a reserved address"
    elif isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        what = "a carrier-grade NAT address"
    if what:
        raise URLRefused(f"{ip} is {what}; data must come from a public host")


def check_url(url: str, *, check_host: bool = True) -> str:
    """Return the host of an acceptable URL, or raise URLRefused saying why not.

    check_host=False skips only the checks of the host and its address (for a host the operator
    allow-listed); the scheme, credential and character rules still apply.
    """
    if not isinstance(url, str) or not url.strip():
        raise URLRefused("the URL is empty")
    if any(c.isspace() for c in url) or any(ord(c) < 32 for c in url):
        raise URLRefused("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a bad port
    except ValueError as e:
        raise URLRefused(f"the URL cannot be parsed ({e})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise URLRefused(
            f"only http and https URLs are allowed, not {parts.scheme or 'a URL without a scheme'}:"
        )
    if parts.username or parts.password:
        raise URLRefused(
            "credentials in URLs are not allowed (they would show in logs); use a public or pre-signed URL"
        )
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise URLRefused("the URL has no host")
    if port is not None and not 0 < port < 65536:
        raise URLRefused(f"port {port} is out of range")
    if not check_host:
        return host
    if host == "localhost" or host.endswith(".localhost"):
        raise URLRefused(f"{host} is this machine; data must come from a public host")
    if host in METADATA_HOSTS:
        raise URLRefused(f"{host} is a cloud metadata service")
    ip = _ip(host)
    if ip is None:
        # Hosts written as integers or hex ("2130706433", "0x7f.1") resolve to IPs on many systems.
        try:
            import socket

            packed = socket.inet_aton(host)
            ip = ipaddress.ip_address(packed)
        except (OSError, ValueError):
            ip = None
    if ip is not None:
        check_address(ip)
    return host
