"""The SQL database: one engine and session factory per URL, migrated with Alembic on open.

SQLite (the embedded default) runs in WAL mode so readers never wait for the one writer;
PostgreSQL works by URL alone (`postgresql+psycopg://…`).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from modelyard.jsontext import dumps

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock key of schema migrations: any number other code does not take
MIGRATE_LOCK = 0x6D6F64656C  # "model"
_MIGRATE_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class Database:
    """Owns the SQLAlchemy engine; `session()` is a unit of work that commits on success."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, **_engine_options(url))
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def shared(self) -> bool:
        """Whether several processes may use this database at once (PostgreSQL: API replicas);
        SQLite is one server process's (`modelyard serve` locks its folder)."""
        return self.engine.dialect.name == "postgresql"

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent).

        On PostgreSQL the migrating transaction first takes an advisory lock, so replicas that
        start together migrate one after the other: the first upgrades, the others wait, then
        find the schema current (Alembic alone would have them all create the same tables, and
        all but one fail). The lock is released with the transaction, whatever happens to it.
        """
        with self.engine.begin() as connection:
            if self.shared:
                connection.execute(_MIGRATE_LOCK, {"key": MIGRATE_LOCK})
            config = alembic_config(self.url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Run the block in one replica at a time (a PostgreSQL advisory lock named `name`,
        held by a connection of its own); on SQLite, one process owns the database anyway."""
        if not self.shared:
            yield
            return
        with self.engine.connect() as connection:
            key = {"name": f"modelyard:{name}"}
            connection.execute(text("SELECT pg_advisory_lock(hashtext(:name))"), key)
            connection.commit()  # the lock is the session's, not the transaction's
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), key)
                connection.commit()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


class DatabaseInUse(RuntimeError):
    """Another server process holds the SQLite database (the message says which and what to do)."""


def hold_sqlite(url: str) -> IO[str] | None:
    """For a server process on SQLite: an exclusive lock (flock) on `<database file>.lock`, held
    while the returned file stays open, for the process's life. None for other databases.

    SQLite is one server's database: a second `modelyard serve` on the same folder would run
    everything the first runs a second time (each recovers all unfinished predictions) and
    fight it for the write lock. The kernel drops the lock when the process dies, however it
    dies, so a crash never leaves a stale lock behind. Raises `DatabaseInUse`."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(f"{parsed.database}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - it stays open as long as the process runs
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DatabaseInUse(
            f"another modelyard serve (pid {holder}) is using the database in {path.parent}; "
            "stop it first (several servers share a PostgreSQL database: --database-url)"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _engine_options(url: str) -> dict[str, Any]:
    # JSON columns hold outputs (an embedding: hundreds of floats): encoded with orjson.
    options: dict[str, Any] = {"json_serializer": dumps}
    if url.startswith("sqlite"):
        # One connection per thread is plenty; the API's threadpool and the event loop share it.
        return {**options, "connect_args": {"check_same_thread": False, "timeout": 30}}
    return {**options, "pool_pre_ping": True}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes, fast commits
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
