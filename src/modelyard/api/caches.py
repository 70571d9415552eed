"""Short-lived caches for lookups every API call makes (token -> account, version refs).

Entries live `ttl` seconds: a token revoked elsewhere (the CLI, another replica) stops working
within that time, and a model made private stops resolving for others within it.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

T = TypeVar("T")


class TtlCache(Generic[T]):
    MAX = 10_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[object, tuple[T, float]] = {}

    def get(self, key: object) -> T | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key: object, value: T) -> None:
        if len(self._entries) >= self.MAX:
            self._entries.clear()  # simple and bounded; a refill costs one query per caller
        self._entries[key] = (value, time.monotonic() + self.ttl)

    def clear(self) -> None:
        self._entries.clear()
