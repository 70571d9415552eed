"""Short-lived caches for lookups made on every call (token -> account, version refs, billing
contexts).

Entries live `ttl` seconds: a token revoked elsewhere (the CLI, another replica) stops working
within that time, and a model made private stops resolving for others within it. A change made
by this server clears the cache after it commits (`clear`); a lookup that read the database
before that clear is not cached (`generation`), so it cannot bring the old answer back.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

T = TypeVar("T")


class TtlCache(Generic[T]):
    """A bounded map whose entries expire `ttl` seconds after they were put."""

    MAX = 10_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[object, tuple[T, float]] = {}
        self.generation = 0  # how many times it was cleared: read it before a lookup

    def get(self, key: object) -> T | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key: object, value: T, generation: int | None = None) -> None:
        """Keep `value`, unless the cache was cleared since `generation` was read (the value
        may predate the change that cleared it)."""
        if generation is not None and generation != self.generation:
            return
        if len(self._entries) >= self.MAX:
            self._entries.clear()  # simple and bounded; a refill costs one query per caller
        self._entries[key] = (value, time.monotonic() + self.ttl)
        # Cleared by another thread between the check above and now: not kept after all.
        if generation is not None and generation != self.generation:
            self._entries.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
