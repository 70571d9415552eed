"""Per-prediction log capture, at the Python level and at the file-descriptor level.

Python writes to `sys.stdout`/`sys.stderr` are routed by a context variable holding the current
prediction id, which is exact even for concurrent async predictions. Writes that bypass Python
(subprocesses, C extensions) land on fds 1 and 2, which are pipes read by a thread here; that text
belongs to the only running prediction, or to the worker's own log when none or several run.
"""

from __future__ import annotations

import contextvars
import io
import os
import select
import threading
from collections.abc import Callable

from .protocol import LogSource

# (prediction id or None, source, text) -> None
LogSink = Callable[[str | None, LogSource, str], None]

current_prediction: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "modelyard_prediction", default=None
)


class RoutedStream(io.TextIOBase):
    """A text stream that sends each complete line to the sink under the current prediction.

    Threads a predictor starts do not inherit its context; their lines go to `owner()`, the only
    running prediction, as fd-level output does.
    """

    def __init__(
        self,
        source: LogSource,
        sink: LogSink,
        fallback: io.TextIOBase,
        owner: Callable[[], str | None],
    ) -> None:
        self._source = source
        self._sink = sink
        self._fallback = fallback
        self._owner = owner
        self._pending: dict[str | None, str] = {}
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def buffer(self) -> _BinaryView:
        """`sys.stdout.buffer` for code that writes bytes (click.echo, ...)."""
        return _BinaryView(self)

    def fileno(self) -> int:
        # Code that hands sys.stdout to a subprocess gets the captured fd.
        return self._fallback.fileno()

    def write(self, text: str) -> int:
        key = current_prediction.get() or self._owner()
        with self._lock:
            buffered = self._pending.pop(key, "") + text
            head, sep, tail = buffered.rpartition("\n")
            if tail:
                self._pending[key] = tail
        if sep:
            self._sink(key, self._source, head + sep)
        return len(text)

    def flush(self) -> None:
        self.flush_prediction(current_prediction.get() or self._owner())

    def flush_prediction(self, key: str | None) -> None:
        with self._lock:
            text = self._pending.pop(key, "")
        if text:
            self._sink(key, self._source, text)


class _BinaryView(io.RawIOBase):
    """Bytes written here are decoded and routed like text."""

    def __init__(self, stream: RoutedStream) -> None:
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._stream.write(bytes(data).decode("utf-8", errors="replace"))
        return len(data)

    def flush(self) -> None:
        self._stream.flush()


class FdCapture:
    """Replaces fds 1 and 2 with pipes and forwards what arrives on them, line by line."""

    def __init__(self, sink: LogSink, owner: Callable[[], str | None]) -> None:
        self._sink = sink
        self._owner = owner
        self._lock = threading.Lock()
        self._pending: dict[int, bytes] = {}
        self._sources: dict[int, LogSource] = {}
        sources: tuple[tuple[int, LogSource], ...] = ((1, "stdout"), (2, "stderr"))
        for fd, source in sources:
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            os.set_blocking(read_end, False)
            self._sources[read_end] = source
            self._pending[read_end] = b""
        self._thread = threading.Thread(target=self._pump, name="modelyard-fd-capture", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        fds = list(self._sources)
        while True:
            ready, _, _ = select.select(fds, [], [])
            with self._lock:
                for fd in ready:
                    self._read_available(fd, flush_partial=False)

    def _read_available(self, fd: int, flush_partial: bool) -> None:
        data = self._pending[fd]
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        head, sep, tail = data.rpartition(b"\n")
        if flush_partial and tail:
            head, sep, tail = data, b"", b""
        self._pending[fd] = tail
        text = (head + sep).decode("utf-8", errors="replace")
        if text:
            self._sink(self._owner(), self._sources[fd], text)

    def drain(self) -> None:
        """Forward everything written so far, so it is logged before the prediction ends."""
        with self._lock:
            # One select() instead of a failing read per pipe: this runs after every prediction.
            ready, _, _ = select.select(list(self._sources), [], [], 0)
            for fd in self._sources:
                if fd in ready or self._pending[fd]:
                    self._read_available(fd, flush_partial=True)
