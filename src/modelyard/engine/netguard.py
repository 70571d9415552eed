"""Keeping user-given URLs (webhooks, file inputs) out of the server's own network.

Off by default for self-hosting (a webhook to localhost is normal there); `--deny-private-urls`
turns it on for a server open to strangers. The host is resolved before each request, redirects
included; a DNS answer that changes between this check and httpx's own lookup can slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress

import httpx


async def private_address(host: str) -> str | None:
    """Why `host` is refused (it resolves to a non-global address), or None."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None)
    except OSError:
        return None  # the request itself reports the failed lookup
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
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
