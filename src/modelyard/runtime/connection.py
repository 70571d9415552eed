"""The parent's end of the worker's data socket: a byte stream split into protocol messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from modelyard_worker import protocol


class Connection(asyncio.Protocol):
    """Splits the worker's byte stream into messages and hands each to `on_message` at once.

    A frame that cannot be accepted (over `protocol.MAX_FRAME`, by its header, so nothing is
    allocated for it; or not a JSON object) goes to `on_error` instead, once: the stream is out of
    step after it, so everything after it is dropped.
    """

    def __init__(
        self,
        on_message: Callable[[protocol.WorkerMessage], None],
        lost: asyncio.Future[None],
        on_error: Callable[[protocol.ProtocolError], None] | None = None,
    ) -> None:
        self._on_message = on_message
        self._on_error = on_error
        self._lost = lost
        self._buffer = bytearray()
        self._broken = False

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        buffer = self._buffer
        buffer += data
        header = protocol.HEADER.size
        try:
            while len(buffer) >= header:
                (size,) = protocol.HEADER.unpack_from(buffer)
                protocol.check_size(size, "the worker")
                if len(buffer) < header + size:
                    break
                body = bytes(buffer[header : header + size])
                del buffer[: header + size]
                self._on_message(cast(protocol.WorkerMessage, protocol.decode(body, "the worker")))
        except protocol.ProtocolError as exc:
            self._broken = True
            buffer.clear()
            if self._on_error is None:
                raise
            self._on_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)
