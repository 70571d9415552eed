"""Data retention in SQL: a finished prediction's input, output, logs and output files go once it
is older than its source's retention, and it keeps `data_removed = true` (engine/retention.py runs
it; docs/platform.md "Retention").

One call removes one bounded batch in the caller's transaction: the candidates are locked with
`FOR UPDATE SKIP LOCKED` on PostgreSQL, so two replicas sweeping at once take disjoint batches,
and every write is conditional on `data_removed = false`, so a batch is removed once only (SQLite
has one writer at a time anyway). What stays: ids, status, error, metrics, timestamps, the model
and version, and the status and metric events of the event log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, exists, false, or_, select, update
from sqlalchemy.orm import Session

from .files import blob_in_use
from .predictions import TERMINAL
from .tables import Event, File, Prediction, WebhookDelivery

# The event types that carry a prediction's data; `done` carries its output too (rewritten).
DATA_EVENTS = ("logs", "output")


@dataclass(frozen=True)
class Cutoffs:
    """Predictions that finished at or before a cutoff lose their data; None keeps them.
    `web` applies to predictions made on the web pages, `api` to every other source."""

    api: datetime | None
    web: datetime | None


@dataclass(frozen=True)
class Removed:
    """What one batch removed: the predictions, and the blobs of their output files that nothing
    refers to any more (the caller deletes those after the commit: blobs are not transactional)."""

    prediction_ids: list[str]
    unused_blobs: list[str]


def removable(session: Session, cutoffs: Cutoffs, limit: int) -> list[str]:
    """Up to `limit` ids, oldest finish first, of finished predictions past their cutoff whose
    data is still there. Never: one still running, an example or a shared one (Replicate keeps
    those), one with a webhook not yet delivered or given up (its body still has to go out)."""
    ages = []
    if cutoffs.api is not None:
        ages.append(and_(Prediction.source != "web", Prediction.completed_at <= cutoffs.api))
    if cutoffs.web is not None:
        ages.append(and_(Prediction.source == "web", Prediction.completed_at <= cutoffs.web))
    if not ages or limit <= 0:
        return []
    pending = exists().where(
        WebhookDelivery.prediction_id == Prediction.id,
        WebhookDelivery.delivered_at.is_(None),
        WebhookDelivery.abandoned_at.is_(None),
    )
    query = (
        select(Prediction.id)
        .where(
            Prediction.data_removed == false(),
            Prediction.status.in_(TERMINAL),
            Prediction.completed_at.is_not(None),
            Prediction.is_example == false(),
            Prediction.is_public == false(),
            or_(*ages),
            ~pending,
        )
        .order_by(Prediction.completed_at, Prediction.id)
        .limit(limit)
        # PostgreSQL: another replica's batch is skipped, not waited for; SQLite ignores it
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def remove_data(session: Session, cutoffs: Cutoffs, limit: int) -> Removed:
    """Remove one batch (see `removable`) in the caller's transaction."""
    ids = removable(session, cutoffs, limit)
    if not ids:
        return Removed([], [])
    result = session.execute(
        update(Prediction)
        .where(Prediction.id.in_(ids), Prediction.data_removed == false())
        .values(input={}, output=None, logs="", data_removed=True)
        .returning(Prediction.id)
    )
    ids = list(result.scalars())
    if not ids:
        return Removed([], [])
    session.execute(delete(Event).where(Event.prediction_id.in_(ids), Event.type.in_(DATA_EVENTS)))
    _clear_done_outputs(session, ids)
    # Settled webhooks are never sent again; their bodies are copies of the data.
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.prediction_id.in_(ids),
            or_(
                WebhookDelivery.delivered_at.is_not(None), WebhookDelivery.abandoned_at.is_not(None)
            ),
        )
        .values(body=b"")
    )
    files = session.execute(
        select(File.id, File.blob_key).where(File.prediction_id.in_(ids), File.purpose == "output")
    ).all()
    if files:
        session.execute(delete(File).where(File.id.in_([file_id for file_id, _ in files])))
    keys = sorted({key for _, key in files})
    return Removed(ids, [key for key in keys if not blob_in_use(session, key)])


def _clear_done_outputs(session: Session, ids: list[str]) -> None:
    """The `done` events keep their status, error and metrics; their output becomes null."""
    rows = session.execute(
        select(Event.id, Event.data).where(Event.prediction_id.in_(ids), Event.type == "done")
    ).all()
    changed: list[dict[str, Any]] = [
        {"event_id": event_id, "new_data": {**data, "output": None}}
        for event_id, data in rows
        if isinstance(data, dict) and data.get("output") is not None
    ]
    if changed:
        session.connection().execute(_SET_EVENT_DATA, changed)


_events = cast(Table, Event.__table__)
_SET_EVENT_DATA = (
    update(_events).where(_events.c.id == bindparam("event_id")).values(data=bindparam("new_data"))
)
