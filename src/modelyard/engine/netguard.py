"""Keeping user-given URLs (webhooks, file inputs) out of the server's own network.

Off by default for self-hosting (a webhook to localhost is normal there); `--deny-private-urls`
turns it on for a server open to strangers. The host is resolved before each request, redirects
included; a DNS answer that changes between this check and httpx's own lookup can slip through.

A host is refused when it cannot be resolved (whatever httpx would then reach, we have not
checked), and when any address it resolves to is not global, or is an IPv6 address that carries
a non-global IPv4 address inside it: IPv4-mapped (`::ffff:127.0.0.1`), IPv4-compatible
(`::127.0.0.1`), NAT64 (`64:ff9b::7f00:1`; the local-use prefix `64:ff9b:1::/48` always), 6to4
(`2002:7f00:1::`) and Teredo. A zone id (`fe80::1%lo`) does not hide the address it qualifies.
"""

from __future__ import annotations

import asyncio
import ipaddress
from ipaddress import IPv4Address, IPv6Address, ip_network

import httpx

IPAddress = IPv4Address | IPv6Address
_NAT64 = ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_NAT64_LOCAL = ip_network("64:ff9b:1::/48")  # RFC 8215: a network's own translators
_COMPATIBLE = ip_network("::/96")  # RFC 4291's deprecated IPv4-compatible addresses


def embedded_ipv4(address: IPv6Address) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for, by every mapping a router may honour."""
    found: list[IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # (server, client)
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        found.append(IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_public(address: IPAddress) -> bool:
    """Whether a request to `address` stays outside this machine's and its networks' reach."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, IPv6Address):
        if address in _NAT64_LOCAL:
            return False
        return all(v4.is_global and not v4.is_multicast for v4 in embedded_ipv4(address))
    return True


def _literal(host: str) -> IPAddress | None:
    """The address when `host` is an IP literal (brackets, `%25`-encoded zone ids allowed)."""
    text = host.strip("[]").replace("%25", "%")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


async def private_address(host: str) -> str | None:
    """Why `host` is refused (it cannot be resolved, or resolves to an address that is not
    public), or None."""
    literal = _literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None)
            addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        except (OSError, UnicodeError, ValueError):
            addresses = []
        if not addresses:
            return f"refused: {host} cannot be resolved"
    for address in addresses:
        if not is_public(address):
            return f"refused: {host} is a private address ({address})"
    return None


class PublicOnlyTransport(httpx.AsyncBaseTransport):
    """Refuses requests (each redirect hop too) to hosts that resolve to private addresses."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        refusal = await private_address(request.url.host)
        if refusal is not None:
            raise httpx.ConnectError(f"{refusal}; this server fetches only public URLs")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
