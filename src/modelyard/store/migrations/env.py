"""Alembic's entry point: runs migrations on the connection `Database.migrate` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from modelyard.store.tables import Base

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:  # the `alembic` command line, e.g. `revision --autogenerate`
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
