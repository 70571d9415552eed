"""Snapshots of running instances: one row per instance, written by the replica that runs it
when its state or its latest health changes, deleted when it stops.

Any API replica answers for any model, and only one of them holds a given pool; the table is how
the others see it. A replica that died leaves its rows behind: they are ignored as soon as its
lease has expired (on PostgreSQL; `live_only`) and deleted by the next replica that starts. On
SQLite one process runs, and it clears every row when it starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, insert, select
from sqlalchemy.orm import Session

from .replicas import _now, _postgres
from .tables import InstanceSnapshot, Replica, Version

_instances = cast(Table, InstanceSnapshot.__table__)
_replicas = cast(Table, Replica.__table__)


@dataclass(frozen=True)
class InstanceView:
    """What the API and the pages show of one instance."""

    id: str
    version_id: str
    mode: str
    deployment_id: int | None
    hardware: str | None
    state: str
    started_at: datetime
    health_status: str | None
    health_error: str | None
    checked_at: datetime | None


def save_snapshots(
    connection: Connection, rows: Sequence[dict[str, Any]], removed: Iterable[str]
) -> None:
    """Replace the rows of `rows` (each with every column) and delete those of `removed`, in
    the caller's transaction. Delete-then-insert: the same on SQLite and PostgreSQL."""
    ids = [row["id"] for row in rows] + list(removed)
    if ids:
        connection.execute(delete(_instances).where(_instances.c.id.in_(ids)))
    if rows:
        connection.execute(insert(_instances), list(rows))


def clear_stale(connection: Connection) -> None:
    """At start: SQLite's rows are all of an earlier run; on PostgreSQL, those of replicas
    whose lease has expired (the live ones keep theirs)."""
    if not _postgres(connection):
        connection.execute(delete(_instances))
        return
    alive = select(_replicas.c.id).where(_replicas.c.expires_at > _now(connection))
    connection.execute(delete(_instances).where(_instances.c.replica.not_in(alive)))


def clear_replica(connection: Connection, replica: str) -> None:
    """A replica stops: its instances stop with it."""
    connection.execute(delete(_instances).where(_instances.c.replica == replica))


def instances_of(
    session: Session,
    *,
    model_id: int | None = None,
    deployment_id: int | None = None,
    live_only: bool = False,
) -> list[InstanceView]:
    """The instances of a model's own pools (`model_id`: not its deployments') or of a
    deployment's, oldest first. `live_only` (PostgreSQL): only those of replicas whose lease
    is live (a crashed replica's rows linger until the next start)."""
    query = select(_instances, Version.id.label("version_id")).join(
        Version, Version.pk == _instances.c.version_pk
    )
    if model_id is not None:
        query = query.where(Version.model_id == model_id, _instances.c.deployment_id.is_(None))
    if deployment_id is not None:
        query = query.where(_instances.c.deployment_id == deployment_id)
    if live_only:
        alive = select(_replicas.c.id).where(_replicas.c.expires_at > _now(session))
        query = query.where(_instances.c.replica.in_(alive))
    rows = session.execute(query.order_by(_instances.c.started_at, _instances.c.id))
    return [
        InstanceView(
            id=row.id,
            version_id=row.version_id,
            mode=row.mode,
            deployment_id=row.deployment_id,
            hardware=row.hardware,
            state=row.state,
            started_at=row.started_at,
            health_status=row.health_status,
            health_error=row.health_error,
            checked_at=row.checked_at,
        )
        for row in rows
    ]
