"""The parent's end of the worker's data socket: a byte stream split into protocol messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from modelyard_worker import protocol


class Connection(asyncio.Protocol):
    """Splits the worker's byte stream into messages and hands each to `on_message` at once."""

    def __init__(self, on_message: Callable[[dict[str, Any]], None], lost: asyncio.Future[None]):
        self._on_message = on_message
        self._lost = lost
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        header = protocol.HEADER.size
        while len(buffer) >= header:
            (size,) = protocol.HEADER.unpack_from(buffer)
            if len(buffer) < header + size:
                break
            body = bytes(buffer[header : header + size])
            del buffer[: header + size]
            self._on_message(protocol.decode(body))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)
