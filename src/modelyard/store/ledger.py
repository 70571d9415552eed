"""Writes of the metering ledger (the `usage` table; its docstring in tables.py says what each
column means), in the caller's transaction.

Exactly once: every row has a `key` naming what it meters (`<prediction id>:active`,
`<instance id>:idle:<n>`...), unique in the table, and is inserted with `ON CONFLICT DO NOTHING`
(SQLite and PostgreSQL both), so a write that is replayed (a retried commit, a restart, another
replica finishing the same prediction) adds nothing. A prediction's `cost_nanos` is the sum of
its billed rows, set in the same transaction as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .tables import Deployment, Model, Prediction, Release, Usage, Version


@dataclass(frozen=True)
class BillingContext:
    """What the rules need of a pool's model (and deployment), read in the transaction."""

    model_id: int
    model_owner_id: int
    private: bool
    pricing: dict[str, Any] | None
    model_hardware: str
    deployment_id: int | None = None
    deployment_owner_id: int | None = None
    deployment_hardware: str | None = None

    @property
    def owner_id(self) -> int:
        """Who pays for the instances kept (setup, idle): the deployment's owner, else the
        model's."""
        return self.deployment_owner_id or self.model_owner_id

    @property
    def hardware(self) -> str:
        """The SKU its pool is configured for (when no instance said which it ran on)."""
        return self.deployment_hardware or self.model_hardware


def context(
    connection: Connection,
    *,
    model_id: int | None = None,
    version_pk: int | None = None,
    deployment_id: int | None = None,
) -> BillingContext | None:
    """The billing context of a model (by id, or by one of its versions) and, optionally, a
    deployment; None when the model is gone."""
    if model_id is None and version_pk is not None:
        model_id = connection.execute(
            select(Version.model_id).where(Version.pk == version_pk)
        ).scalar()
    if model_id is None:
        return None
    row = connection.execute(
        select(Model.owner_id, Model.visibility, Model.pricing, Model.hardware).where(
            Model.id == model_id
        )
    ).first()
    if row is None:
        return None
    owner_id, visibility, pricing, hardware = row
    found = BillingContext(model_id, owner_id, visibility == "private", pricing, hardware)
    if deployment_id is None:
        return found
    deployment_owner = connection.execute(
        select(Deployment.owner_id).where(Deployment.id == deployment_id)
    ).scalar()
    if deployment_owner is None:  # deleted: its usage is still the model's to show
        return found
    release_hardware = connection.execute(
        select(Release.hardware)
        .where(Release.deployment_id == deployment_id)
        .order_by(Release.number.desc())
        .limit(1)
    ).scalar()
    return BillingContext(
        model_id, owner_id, found.private, pricing, hardware,
        deployment_id, deployment_owner, release_hardware,
    )  # fmt: skip


def usage_row(
    *,
    key: str,
    account_id: int,
    prediction_id: str | None,
    model_id: int | None,
    deployment_id: int | None,
    hardware: str,
    phase: str,
    seconds: float,
    quantity: float,
    unit: str,
    unit_price_nanos: int,
    cost_nanos: int,
    billed: bool,
    day: date,
    created_at: datetime,
) -> dict[str, Any]:
    """One ledger row's values (every column but `id`)."""
    return {
        "key": key,
        "account_id": account_id,
        "prediction_id": prediction_id,
        "model_id": model_id,
        "deployment_id": deployment_id,
        "hardware": hardware,
        "phase": phase,
        "seconds": seconds,
        "quantity": quantity,
        "unit": unit,
        "unit_price_nanos": unit_price_nanos,
        "cost_nanos": cost_nanos,
        "billed": billed,
        "day": day,
        "created_at": created_at,
    }


def record(connection: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert `rows` (`usage_row`), skipping any whose key is already there; how many were
    new."""
    if not rows:
        return 0
    statement = _INSERTS.get(connection.dialect.name)
    if statement is None:  # pragma: no cover - the project runs on these two
        raise RuntimeError(f"the ledger needs SQLite or PostgreSQL, not {connection.dialect.name}")
    added = 0
    for row in rows:  # one execution each: rowcount says whether each was new
        added += max(0, connection.execute(statement, row).rowcount or 0)
    return added


def settle_prediction(connection: Connection, prediction_id: str) -> int | None:
    """Set the prediction's `cost_nanos` to the sum of its billed rows (None when it has no
    rows), in one statement; returns it."""
    return connection.execute(_SETTLE, {"pid": prediction_id}).scalar()


# Built once: constructing and cache-keying a statement costs more than running it, and these
# run with every prediction's end.
_INSERTS: dict[str, Any] = {
    "postgresql": postgresql.insert(Usage).on_conflict_do_nothing(index_elements=["key"]),
    "sqlite": sqlite.insert(Usage).on_conflict_do_nothing(index_elements=["key"]),
}
_billed = func.sum(case((Usage.billed.is_(True), Usage.cost_nanos), else_=0))
_SETTLE = (
    update(Prediction)
    .where(Prediction.id == bindparam("pid"))
    .values(
        cost_nanos=select(case((func.count(Usage.id) > 0, func.coalesce(_billed, 0))))
        .where(Usage.prediction_id == bindparam("pid"))
        .scalar_subquery()
    )
    .returning(Prediction.cost_nanos)
)


def rows_of(session: Session, prediction_id: str) -> list[Usage]:
    """A prediction's ledger rows, oldest first."""
    query = select(Usage).where(Usage.prediction_id == prediction_id).order_by(Usage.id)
    return list(session.scalars(query))
