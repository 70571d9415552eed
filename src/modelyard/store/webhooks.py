"""The webhook outbox: deliveries are stored before they are sent and kept until they are done.

A row is pending while neither `delivered_at` nor `abandoned_at` is set. Senders claim a due row
by moving its `next_attempt_at` into the future in one conditional UPDATE, so two server
processes on the same database never send the same try twice; a claim that is never settled
(the process died mid-send) simply becomes due again when that time passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .tables import Account, WebhookDelivery, utcnow


@dataclass(frozen=True)
class NewDelivery:
    message_id: str  # `msg_…`, the same on every try
    prediction_id: str
    account_id: int
    url: str
    event: str  # start | output | logs | completed
    body: bytes
    terminal: bool = False
    not_before: datetime | None = None  # the end of the prediction's throttle window


@dataclass(frozen=True)
class PendingDelivery:
    """What a sender needs for one try: the row's content and the owner's signing secret."""

    id: int
    message_id: str
    prediction_id: str
    url: str
    event: str
    body: bytes
    terminal: bool
    attempts: int
    next_attempt_at: datetime
    secret: str


def enqueue(connection: Connection, new: NewDelivery) -> bool:
    """Store a delivery in the caller's transaction; False when one with this message id
    exists already (stored by an earlier try or another process): each is sent once only."""
    now = utcnow()
    row = {
        "message_id": new.message_id,
        "prediction_id": new.prediction_id,
        "account_id": new.account_id,
        "url": new.url,
        "event": new.event,
        "body": new.body,
        "terminal": new.terminal,
        "attempts": 0,
        "next_attempt_at": max(now, new.not_before) if new.not_before else now,
        "created_at": now,
    }
    # ON CONFLICT DO NOTHING: a duplicate must not fail the transaction it shares with the
    # prediction's terminal event.
    insert = _INSERTS[connection.dialect.name](WebhookDelivery.__table__)
    statement = insert.values(row).on_conflict_do_nothing(index_elements=["message_id"])
    return connection.execute(statement).rowcount == 1  # type: ignore[attr-defined]


_INSERTS: dict[str, Callable[..., Any]] = {"sqlite": sqlite_insert, "postgresql": pg_insert}


def pending(session: Session, limit: int = 500) -> list[PendingDelivery]:
    """Undelivered, unabandoned rows, oldest first (due or not)."""
    rows = session.execute(
        select(WebhookDelivery, Account.webhook_secret)
        .join(Account, Account.id == WebhookDelivery.account_id)
        .where(WebhookDelivery.delivered_at.is_(None), WebhookDelivery.abandoned_at.is_(None))
        .order_by(WebhookDelivery.id)
        .limit(limit)
    )
    return [
        PendingDelivery(
            id=row.id,
            message_id=row.message_id,
            prediction_id=row.prediction_id,
            url=row.url,
            event=row.event,
            body=row.body,
            terminal=row.terminal,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            secret=secret,
        )
        for row, secret in rows
    ]


def claim(session: Session, delivery_id: int, now: datetime, lease: float) -> bool:
    """Take a due row for one try; False when it is not due (any more) or already settled."""
    result = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.delivered_at.is_(None),
            WebhookDelivery.abandoned_at.is_(None),
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(next_attempt_at=now + timedelta(seconds=lease))
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def release(session: Session, delivery_ids: Iterable[int]) -> None:
    """Give claimed rows back (a clean shutdown mid-send): due at once, no try counted."""
    ids = list(delivery_ids)
    if ids:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids), WebhookDelivery.delivered_at.is_(None))
            .values(next_attempt_at=utcnow())
        )


def record_attempt(
    session: Session,
    delivery_id: int,
    *,
    error: str | None,
    retry_delays: tuple[float, ...],
    retry: bool = True,
) -> WebhookDelivery | None:
    """Settle one try. A failed terminal delivery waits for the next delay; after the last
    delay, a failed intermediate one, or one with `retry=False`, it is abandoned."""
    row = session.get(WebhookDelivery, delivery_id)
    if row is None:  # its prediction was deleted meanwhile
        return None
    now = utcnow()
    row.attempts += 1
    row.last_error = error
    if error is None:
        row.delivered_at = now
    elif retry and row.terminal and row.attempts <= len(retry_delays):
        row.next_attempt_at = now + timedelta(seconds=retry_delays[row.attempts - 1])
    else:
        row.abandoned_at = now
    return row


def deliveries_of(session: Session, prediction_id: str) -> list[WebhookDelivery]:
    """Every delivery of a prediction, in the order they were stored."""
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.prediction_id == prediction_id)
            .order_by(WebhookDelivery.id)
        )
    )
