"""Rate limits per caller: token buckets, one for prediction/training creates, one for the rest.

Replicate's defaults: 600 creates and 3000 other requests a minute, with bursts of up to a
minute's worth. A caller is its Authorization header, or its address when it sends none. A
refusal is a 429 problem+json with `Retry-After`, which the Python client honours on GETs.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from modelyard.settings import RateLimits

from .errors import Problem, problem_response

_CREATE = re.compile(r"^(?:/v1)?(?:/.*)?/(?:predictions|trainings)$")


@dataclass
class Bucket:
    capacity: float
    per_second: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second


class RateLimiter:
    """Buckets by (caller, kind); a limit of 0 is no limit."""

    MAX_CALLERS = 100_000  # forget the oldest buckets beyond this many

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._buckets: dict[tuple[str, str], Bucket] = {}

    def check(self, caller: str, kind: str, now: float | None = None) -> float:
        per_minute = (
            self.limits.creates_per_minute if kind == "create" else self.limits.other_per_minute
        )
        if per_minute <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        key = (caller, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_CALLERS:
                self._buckets.pop(next(iter(self._buckets)))
            bucket = Bucket(per_minute, per_minute / 60.0, float(per_minute), now)
            self._buckets[key] = bucket
        return bucket.take(now)


class RateLimitMiddleware:
    """Pure ASGI, so streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _limited(scope["path"]):
            await self.app(scope, receive, send)
            return
        kind = "create" if scope["method"] == "POST" and _CREATE.match(scope["path"]) else "other"
        wait = self.limiter.check(_caller(scope), kind)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        seconds = max(1, math.ceil(wait))
        problem = Problem(
            429,
            f"Request was throttled. Expected available in {seconds} second"
            f"{'' if seconds == 1 else 's'}.",
            title="Too many requests",
            headers={"Retry-After": str(seconds)},
            retry_after=seconds,
        )
        await problem_response(problem)(scope, receive, send)


def _limited(path: str) -> bool:
    """API calls only: output files and SSE streams are reads of what was already paid for."""
    return not path.startswith(("/delivery/", "/v1/streams/", "/streams/"))


def _caller(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return value.decode("latin-1")  # kept in memory only, like the token itself
    client = scope.get("client")
    return f"ip:{client[0] if client else '?'}"
