"""API replicas on one PostgreSQL database: who runs each unfinished prediction, and until when.

Each replica has a row in `replicas` whose `expires_at` it pushes forward (`renew`) well before
it passes; that one row is the lease on every prediction whose `owner` is the replica. A lease
that has expired can never be renewed (`renew` only extends a live one), so once a replica is
seen dead it stays dead: whoever claims its predictions does not race a comeback. A replica that
finds its lease lapsed joins again under a new id and takes back, conditionally, what is still
its own.

Claims are conditional UPDATEs (`owner` must still be the owner seen), so of two replicas that
claim one prediction at once exactly one wins: on PostgreSQL the loser's UPDATE waits for the
winner's row lock, then re-checks its WHERE clause on the new row and matches nothing.

Time is the database's clock (`statement_timestamp()`), so replicas whose clocks disagree still
agree on which leases have expired. Channels for LISTEN/NOTIFY are named here too.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Connection,
    DateTime,
    Table,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from .tables import Prediction, Replica, utcnow

EVENTS_CHANNEL = "modelyard_events"  # payload: a prediction id whose events were committed
CANCEL_CHANNEL = "modelyard_cancel"  # payload: a prediction id its owner is asked to cancel
LEFT_CHANNEL = "modelyard_replicas"  # payload: a replica id that left: claim its predictions
CHANNELS = (EVENTS_CHANNEL, CANCEL_CHANNEL, LEFT_CHANNEL)
UNFINISHED = ("starting", "processing")

_replicas = cast(Table, Replica.__table__)
_predictions = cast(Table, Prediction.__table__)


def new_replica_id() -> str:
    """A random id per engine (and per rejoin after a lapsed lease)."""
    return "r" + secrets.token_hex(12)


def _postgres(connection: Connection | Session) -> bool:
    bind = connection.get_bind() if isinstance(connection, Session) else connection
    return bind.dialect.name == "postgresql"


def _now(connection: Connection | Session) -> Any:
    """The database's clock on PostgreSQL (one clock for every replica); this process's on
    SQLite, where only one process uses the database anyway."""
    if _postgres(connection):
        return func.statement_timestamp(type_=DateTime(timezone=True))
    return utcnow()


def register(connection: Connection, replica_id: str, ttl: float) -> None:
    """A replica joins: its lease runs `ttl` seconds from now."""
    now = _now(connection)
    connection.execute(
        insert(_replicas).values(
            id=replica_id,
            host=socket.gethostname()[:200],
            pid=os.getpid(),
            started_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
    )


def renew(connection: Connection, replica_id: str, ttl: float) -> bool:
    """Extend a live lease to `ttl` seconds from now; False when it already expired (or the
    row is gone): then the replica may have lost predictions to others and must join again."""
    now = _now(connection)
    result = connection.execute(
        update(_replicas)
        .where(_replicas.c.id == replica_id, _replicas.c.expires_at > now)
        .values(expires_at=now + timedelta(seconds=ttl))
    )
    return result.rowcount == 1


def retire(connection: Connection, replica_id: str) -> None:
    """A replica leaves (a graceful stop): its unfinished predictions become claimable at once,
    and the others are told so (they claim now, not at their next periodic look)."""
    connection.execute(delete(_replicas).where(_replicas.c.id == replica_id))
    notify(connection, LEFT_CHANNEL, replica_id)


def owner_alive(session: Session, owner: str | None) -> bool:
    """Whether `owner` holds a live lease."""
    if owner is None:
        return False
    found = session.execute(
        select(_replicas.c.id).where(
            _replicas.c.id == owner, _replicas.c.expires_at > _now(session)
        )
    ).first()
    return found is not None


def orphans(session: Session, limit: int = 1000) -> list[tuple[str, str | None]]:
    """(id, owner) of unfinished predictions nobody holds a live lease on, oldest first."""
    alive = select(_replicas.c.id).where(_replicas.c.expires_at > _now(session))
    rows = session.execute(
        select(_predictions.c.id, _predictions.c.owner)
        .where(
            _predictions.c.status.in_(UNFINISHED),
            or_(_predictions.c.owner.is_(None), _predictions.c.owner.not_in(alive)),
        )
        .order_by(_predictions.c.created_at, _predictions.c.id)
        .limit(limit)
    )
    return [(row.id, row.owner) for row in rows]


def claim(
    session: Session, prediction_id: str, old_owner: str | None, new_owner: str
) -> Prediction | None:
    """Make `new_owner` the owner, if the owner is still `old_owner` and it is unfinished; the
    claimed row (detached), or None when another replica was first or it ended meanwhile."""
    held_by = (
        _predictions.c.owner.is_(None) if old_owner is None else _predictions.c.owner == old_owner
    )
    result = session.execute(
        update(_predictions)
        .where(
            _predictions.c.id == prediction_id,
            held_by,
            _predictions.c.status.in_(UNFINISHED),
        )
        .values(owner=new_owner)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    prediction = session.get(Prediction, prediction_id, populate_existing=True)
    if prediction is not None:
        session.expunge(prediction)
    return prediction


def claim_orphans(session: Session, new_owner: str) -> list[Prediction]:
    """Claim every orphan (see `orphans`); the claimed rows, oldest first. Rows of replicas that
    expired go too: nothing reads a dead lease, and crashed replicas would pile up."""
    claimed = [
        prediction
        for prediction_id, owner in orphans(session)
        if (prediction := claim(session, prediction_id, owner, new_owner)) is not None
    ]
    session.execute(delete(_replicas).where(_replicas.c.expires_at <= _now(session)))
    return claimed


def reclaim(
    session: Session, prediction_ids: Iterable[str], old_owner: str, new_owner: str
) -> set[str]:
    """After a lapsed lease: take back those of `prediction_ids` still owned under the old id;
    the ids owned under the new one now (the others were claimed by another replica)."""
    ids = list(prediction_ids)
    if not ids:
        return set()
    session.execute(
        update(_predictions)
        .where(_predictions.c.id.in_(ids), _predictions.c.owner == old_owner)
        .values(owner=new_owner)
        .execution_options(synchronize_session=False)
    )
    # Those created under the new id meanwhile are ours too.
    owned = select(_predictions.c.id).where(
        _predictions.c.id.in_(ids), _predictions.c.owner == new_owner
    )
    return set(session.scalars(owned))


def lease_of(session: Session, replica_id: str) -> datetime | None:
    """When the replica's lease expires (None: no row); for tests and people."""
    return session.scalar(select(_replicas.c.expires_at).where(_replicas.c.id == replica_id))


def notify(connection: Connection | Session, channel: str, payload: str) -> None:
    """NOTIFY in the caller's transaction (sent when it commits, dropped if it rolls back);
    nothing on SQLite, whose only process wakes its followers itself."""
    if _postgres(connection):
        connection.execute(_NOTIFY, {"channel": channel, "payload": payload})


_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
