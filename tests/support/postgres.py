"""A fresh PostgreSQL database for a test module: the local server (trust auth, 127.0.0.1:5432,
as `postgres`), a database of its own, dropped afterwards (even with connections left open).

    with fresh_database("replicas") as url:   # postgresql+psycopg://postgres@127.0.0.1:5432/…
        ...
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def available() -> bool:
    try:
        with create_engine(f"{SERVER}/postgres").connect() as connection:
            connection.execute(text("select 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means: not here
        return False


@contextmanager
def fresh_database(prefix: str = "t") -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty database; dropped when the block ends."""
    if not available():
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (the CI machine has it)")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{SERVER}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
