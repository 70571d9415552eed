"""LISTEN on PostgreSQL: one thread per process with a connection of its own, handing each
notification to a callback (the engine moves it onto its event loop).

The connection lives outside SQLAlchemy's pool: LISTEN belongs to one session, which must stay
open and idle in autocommit for as long as the process runs. When it drops (a restart of the
database, a network cut), the thread connects again with a growing delay; `connected(False)` and
`connected(True)` tell the owner, who must assume that notifications were missed in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

WAIT = 1.0  # seconds a wait for notifications lasts: how fast `stop()` is heard
PING_EVERY = 10.0  # seconds between round trips that find a connection dead without traffic
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
# Its name in pg_stat_activity, and TCP keepalives: a half-open connection (a cut network) is
# noticed in about 25 s, not hours.
PARAMETERS = {"application_name": "modelyard-listen", "keepalives": "1", "keepalives_idle": "10",
              "keepalives_interval": "5", "keepalives_count": "3"}  # fmt: skip

Deliver = Callable[[str, str], None]  # (channel, payload), called on the listener's thread
Connected = Callable[[bool], None]


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://…`) as libpq takes it (`postgresql://…`), its own
    parameters (e.g. `?options=-csearch_path%3Dx`) kept, `PARAMETERS` added unless it sets them."""
    plain = make_url(url).set(drivername="postgresql")
    return plain.set(query={**PARAMETERS, **plain.query}).render_as_string(hide_password=False)


class Listener:
    """Listens on `channels` until `stop()`; each notification goes to `deliver`."""

    def __init__(
        self,
        url: str,
        channels: Sequence[str],
        deliver: Deliver,
        connected: Connected | None = None,
        name: str = "modelyard-listen",
    ) -> None:
        self.conninfo = libpq_url(url)
        self.channels = tuple(channels)
        self._deliver = deliver
        self._connected = connected or (lambda _up: None)
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Whether it is listening (blocking, up to `timeout`): a notification sent after this
        returned True is heard."""
        return self._ready.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as connection:
                    for channel in self.channels:
                        connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    failures = 0
                    self._ready.set()
                    self._connected(True)
                    self._listen(connection)
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    break
                self._lost(exc, failures)
                failures += 1
                self._stopping.wait(RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1])
            except Exception:  # a callback's bug: logged, and the thread goes on listening
                log.exception("a LISTEN callback failed; listening again")
                self._lost(None, failures)
                self._stopping.wait(RETRY_DELAYS[-1])

    def _listen(self, connection: psycopg.Connection) -> None:
        pinged = time.monotonic()
        while not self._stopping.is_set():
            for notice in connection.notifies(timeout=WAIT):
                self._deliver(notice.channel, notice.payload)
            if time.monotonic() - pinged >= PING_EVERY:
                connection.execute("SELECT 1")
                pinged = time.monotonic()

    def _lost(self, error: BaseException | None, failures: int) -> None:
        if self._ready.is_set() or failures == 0:
            why = "" if error is None else str(error).splitlines()[0][:200]
            log.warning("LISTEN connection lost (%s); connecting again", why)
        self._ready.clear()
        self._connected(False)
