"""`GET /metrics`: the server's Prometheus metrics (engine/metrics.py), and its HTTP requests.

Who may read it. Prometheus usually scrapes without credentials, and the metrics name models
(private ones too), so by default:
- a client on the loopback interface (Prometheus or an agent on the same machine) reads it
  without a token, unless the request came through a proxy (`Forwarded`, `X-Forwarded-For` or
  `X-Real-IP` present): a reverse proxy on the same machine must not open it to the world;
- anyone else needs an admin's token (`Authorization: Bearer <token>`, Prometheus'
  `authorization` scrape option): 401 without a valid token, 403 with another account's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard.engine.metrics import EngineMetrics

from .auth import authenticate_request
from .errors import Problem

router = APIRouter()
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "QUERY"})
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def loopback(request: Request) -> bool:
    """A direct client on this machine (not one a proxy on this machine forwarded)."""
    if any(name in request.headers for name in PROXY_HEADERS):
        return False
    host = request.client.host if request.client is not None else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # not an address (a test transport's name, a Unix socket)
        return False


def _may_read(request: Request) -> None:
    """Raises a problem unless the caller may read the metrics (see the module doc)."""
    if loopback(request):
        return
    account = authenticate_request(request)  # 401 without a valid token
    if not account.is_admin:
        raise Problem(
            403,
            "The metrics are served to clients on this machine and to admin tokens.",
            title="Forbidden",
        )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The Prometheus text format (version 0.0.4)."""
    if not loopback(request):
        await asyncio.to_thread(_may_read, request)  # a token lookup: off the loop
    engine_metrics: EngineMetrics = request.app.state.metrics
    await engine_metrics.refresh()
    # On the loop: the gauges read the engine's pools, which only the loop changes.
    body = generate_latest(engine_metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"cache-control": "no-store"})


class HttpMetrics:
    """ASGI middleware: requests by method, route template and status, and their durations.

    The route is the matched template (`/v1/predictions/{prediction_id}`), never the path, so
    the labels stay bounded; a request no route matched is counted as `unmatched`."""

    def __init__(self, app: ASGIApp, metrics: EngineMetrics) -> None:
        self.app = app
        self.requests = Counter(
            "modelyard_http_requests", "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"], registry=metrics.registry,
        )  # fmt: skip
        self.seconds = Histogram(
            "modelyard_http_request_duration_seconds",
            "From a request's arrival to the end of its answer (a stream: to its end).",
            ["method", "route"], registry=metrics.registry, buckets=HTTP_BUCKETS,
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raised before it answered

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = _route(scope)
            self.requests.labels(method, route, str(status)).inc()
            self.seconds.labels(method, route).observe(time.perf_counter() - started)


def _route(scope: Scope) -> str:
    """The template of the matched route, with the prefix it was mounted under: FastAPI sets
    `scope["route"]` to the route as declared (`/predictions`, whether the request came under
    `/v1` or at the root), so the prefix is what is left of the path before the part it
    matched."""
    route = scope.get("route")  # set by the router on a match (FastAPI and Starlette)
    template, pattern = getattr(route, "path", None), getattr(route, "path_regex", None)
    if not isinstance(template, str):
        return "unmatched"
    path: str = scope.get("path", "")
    if pattern is not None and not pattern.match(path):
        cut = 0
        while (cut := path.find("/", cut + 1)) > 0:
            if pattern.match(path[cut:]):
                return path[:cut] + template
    return template
