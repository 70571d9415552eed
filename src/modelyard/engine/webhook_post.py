"""One try of one webhook: checked, signed (Standard Webhooks) and posted.

A webhook to a host that resolves to a private address is refused when the server does not
allow private targets (a multi-tenant server: a webhook must not reach into its own network).
Redirects are not followed (the client is made with `follow_redirects=False`): a 3xx is a
failure. The caller's W3C trace context (`traceparent`, `tracestate`), when the prediction was
created with one, goes on every try as Cog sends it.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from standardwebhooks import Webhook

from modelyard.store.tables import utcnow
from modelyard.store.webhooks import PendingDelivery

from .netguard import private_address


async def post(
    http: httpx.AsyncClient,
    row: PendingDelivery,
    *,
    allow_private: bool,
    trace: Mapping[str, str] | None = None,
) -> tuple[str | None, bool]:
    """One signed POST: (None, _) when delivered, else (why, whether a retry may help)."""
    try:
        target = httpx.URL(row.url)
    except httpx.InvalidURL as exc:
        return f"not a valid URL: {exc}", False
    if target.scheme not in ("http", "https") or not target.host:
        return "not a valid URL: it needs http(s) and a host", False
    if not allow_private:
        refusal = await private_address(target.host)
        if refusal is not None:
            return f"{refusal} and this server does not send webhooks to private addresses", False
    timestamp = utcnow()
    signature = Webhook(row.secret).sign(row.message_id, timestamp, row.body.decode())
    headers = {
        "content-type": "application/json",
        "webhook-id": row.message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }
    if trace:  # only the two W3C headers, whatever else the stored context might hold
        headers.update({k: v for k, v in trace.items() if k in ("traceparent", "tracestate")})
    try:
        response = await http.post(row.url, content=row.body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}".rstrip(": "), True
    if response.is_success:
        return None, True
    if response.is_redirect:
        where = response.headers.get("location", "")
        return f"HTTP {response.status_code} (redirects are not followed) to {where}", True
    return f"HTTP {response.status_code}", True
