"""Predictions (and trainings) and their event logs.

Every change to a prediction is an event appended with the next sequence number; the row's
status, output, logs, error and metrics are the projection of those events, updated in the same
transaction, so a GET never disagrees with the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from .ids import new_id
from .tables import Event, Model, Prediction, utcnow

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
EventType = Literal["status", "logs", "output", "metric", "done"]
Kind = Literal["prediction", "training"]  # a training is a prediction of the package's `train:`


@dataclass(frozen=True)
class NewEvent:
    """`status` {status}, `logs` text, `output` one item of an iterator, `metric`
    {name, value, mode}, `done` {status, output?, error?, metrics?}."""

    type: EventType
    data: Any = None


@dataclass(frozen=True)
class NewPrediction:
    account_id: int
    model_id: int
    model_ref: str
    version_pk: int
    version_id: str
    input: dict[str, Any]
    kind: Kind = "prediction"
    source: str = "api"
    streams: bool = False
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    deadline: datetime | None = None
    deployment_id: int | None = None
    deployment_ref: str | None = None
    destination_model_id: int | None = None
    destination_ref: str | None = None
    stream_key: str | None = None
    trace_context: dict[str, str] | None = None  # the caller's traceparent/tracestate


def done_event(
    status: str,
    *,
    output: Any = None,
    error: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> NewEvent:
    """The event that ends a prediction (`output` only when there is one, or it succeeded)."""
    data: dict[str, Any] = {"status": status, "error": error, "metrics": metrics or {}}
    if output is not None or status == "succeeded":
        data["output"] = output
    return NewEvent("done", data)


def create_prediction(
    session: Session | Connection, new: NewPrediction, owner: str | None = None
) -> Prediction:
    """The prediction (detached), stored as `starting` with its first event; the model's
    run count goes up in the same transaction. `owner` is the replica that will run it (its
    lease, not a later recovery elsewhere, decides who runs it: store/replicas.py)."""
    prediction = _starting(new, new_id(), utcnow())
    prediction.owner = owner
    # Prepared Core statements, not the unit of work: this is on every create's path.
    _insert(session, prediction)
    session.execute(_COUNT_RUN, {"model": new.model_id})
    return prediction


@dataclass(frozen=True)
class FinishedRun:
    """What a run that happened elsewhere gave (a catalog model's recorded example)."""

    output: Any
    logs: str
    predict_time: float | None


def add_finished(
    session: Session, new: NewPrediction, prediction_id: str, run: FinishedRun
) -> Prediction:
    """Store a prediction that already succeeded, with the event log it would have had (the
    row projected from it, as for any prediction); it does not count as a run of the model."""
    took = timedelta(seconds=run.predict_time or 0.0)
    prediction = _starting(new, prediction_id, utcnow() - took)
    _insert(session, prediction)
    metrics = {} if run.predict_time is None else {"predict_time": run.predict_time}
    events = [
        NewEvent("status", {"status": "processing"}),
        *([NewEvent("logs", run.logs)] if run.logs else []),
        NewEvent("done", {"status": "succeeded", "output": run.output, "metrics": metrics}),
    ]
    numbered = project(prediction, events)
    write_events(session.connection(), projected_state(prediction), numbered)
    return prediction


def _starting(new: NewPrediction, prediction_id: str, now: datetime) -> Prediction:
    return Prediction(
        id=prediction_id,
        kind=new.kind,
        account_id=new.account_id,
        model_id=new.model_id,
        model_ref=new.model_ref,
        version_pk=new.version_pk,
        version_id=new.version_id,
        deployment_id=new.deployment_id,
        deployment_ref=new.deployment_ref,
        destination_model_id=new.destination_model_id,
        destination_ref=new.destination_ref,
        input=new.input,
        output=None,
        logs="",
        status="starting",
        metrics={},
        source=new.source,
        stream_key=new.stream_key,
        webhook=new.webhook,
        webhook_events_filter=new.webhook_events_filter,
        deadline=new.deadline,
        trace_context=new.trace_context,
        last_seq=0,
        data_removed=False,
        is_public=False,
        is_example=False,
        created_at=now,
    )


def _insert(session: Session | Connection, prediction: Prediction) -> None:
    """The row as it starts, and its event 0."""
    session.execute(_INSERT_PREDICTION, _columns(prediction))
    session.execute(
        _INSERT_EVENT,
        [{"prediction_id": prediction.id, "seq": 0, "type": "status",
          "data": {"status": "starting"}, "created_at": prediction.created_at}],
    )  # fmt: skip


def append_events(session: Session, prediction_id: str, events: list[NewEvent]) -> Prediction:
    """Load the prediction, append `events` (see `project`) and write them; for one-off writers.

    The engine keeps running predictions in memory and calls `project` and `write_events` itself.
    """
    prediction = session.get(Prediction, prediction_id, with_for_update=True)
    if prediction is None:
        raise LookupError(f"no prediction {prediction_id}")
    session.expunge(prediction)  # changed in memory, written by write_events
    numbered = project(prediction, events)
    write_events(session.connection(), projected_state(prediction), numbered)
    return prediction


def project(prediction: Prediction, events: list[NewEvent]) -> list[tuple[int, NewEvent]]:
    """Apply events to the (detached) prediction in order, numbering them; events after `done`
    are dropped. Returns what to write."""
    numbered = []
    for event in events:
        if prediction.status in TERMINAL:
            break
        prediction.last_seq += 1
        numbered.append((prediction.last_seq, event))
        _project(prediction, event)
    return numbered


def projected_state(prediction: Prediction) -> dict[str, Any]:
    """The projected columns as they are now: a copy another thread may write while the event
    loop goes on projecting (`_project` replaces values, it never mutates them in place)."""
    state = {name: getattr(prediction, name) for name in _PROJECTED}
    state["pid"] = prediction.id
    return state


def write_events(
    connection: Connection, state: dict[str, Any], numbered: list[tuple[int, NewEvent]]
) -> None:
    """Persist projected events and the prediction's state (`projected_state`) in the caller's
    transaction."""
    if not numbered:
        return
    now = utcnow()
    connection.execute(_UPDATE_PROJECTION, state)
    connection.execute(
        _INSERT_EVENT,
        [
            {"prediction_id": state["pid"], "seq": seq, "type": event.type, "data": event.data,
             "created_at": now}
            for seq, event in numbered
        ],
    )  # fmt: skip


_PROJECTED = (
    "status", "output", "logs", "error", "metrics", "started_at", "completed_at", "last_seq",
)  # fmt: skip

# Built once: constructing and cache-keying a statement per call costs more than running it.
_predictions = cast(Table, Prediction.__table__)
_models = cast(Table, Model.__table__)
_INSERT_PREDICTION = insert(_predictions)
_INSERT_EVENT = insert(cast(Table, Event.__table__))
_UPDATE_PROJECTION = (
    update(_predictions)
    .where(_predictions.c.id == bindparam("pid"))
    .values({name: bindparam(name) for name in _PROJECTED})
)
_COUNT_RUN = (
    update(_models)
    .where(_models.c.id == bindparam("model"))
    .values(run_count=_models.c.run_count + 1)
)


def _columns(prediction: Prediction) -> dict[str, Any]:
    return {column.key: getattr(prediction, column.key) for column in Prediction.__mapper__.columns}


def copy_of(prediction: Prediction) -> Prediction:
    """A detached copy of the row as it is now (the engine's live one goes on changing)."""
    return Prediction(**_columns(prediction))


def _project(prediction: Prediction, event: NewEvent) -> None:
    data = event.data
    if event.type == "status":
        prediction.status = data["status"]
        if data["status"] == "processing" and prediction.started_at is None:
            prediction.started_at = utcnow()
    elif event.type == "logs":
        prediction.logs = (prediction.logs or "") + data
    elif event.type == "output":
        prediction.output = [*(prediction.output or []), data]
    elif event.type == "metric":
        prediction.metrics = _apply_metric(dict(prediction.metrics or {}), data)
    elif event.type == "done":
        prediction.status = data["status"]
        if "output" in data:
            prediction.output = data["output"]
        prediction.error = data.get("error")
        prediction.completed_at = utcnow()
        metrics = dict(prediction.metrics or {})
        metrics.update(data.get("metrics") or {})
        if "predict_time" not in metrics and prediction.started_at is not None:
            # ended without the runner's own figure (a crash, a restart): time since it started
            metrics["predict_time"] = (
                prediction.completed_at - prediction.started_at
            ).total_seconds()
        metrics["total_time"] = (prediction.completed_at - prediction.created_at).total_seconds()
        prediction.metrics = metrics


def _apply_metric(metrics: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    name, value, mode = data["name"], data["value"], data.get("mode", "replace")
    if mode == "incr" and isinstance(metrics.get(name), int | float):
        metrics[name] = metrics[name] + value
    elif mode == "append":
        metrics[name] = [*(metrics.get(name) or []), value]
    else:
        metrics[name] = value
    return metrics


def get_prediction(session: Session, prediction_id: str) -> Prediction | None:
    return session.get(Prediction, prediction_id)


def events_after(session: Session, prediction_id: str, seq: int, limit: int = 500) -> list[Event]:
    return list(
        session.scalars(
            select(Event)
            .where(Event.prediction_id == prediction_id, Event.seq > seq)
            .order_by(Event.seq)
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class PredictionFilter:
    account_id: int
    kind: Kind = "prediction"
    created_after: datetime | None = None
    created_before: datetime | None = None
    model_ref: str | None = None
    version_id: str | None = None
    status: str | None = None
    source: str | None = None
    deployment_id: int | None = None


def list_predictions(
    session: Session, where: PredictionFilter, *, before: tuple[datetime, str] | None, limit: int
) -> list[Prediction]:
    """Newest first; `before` is the (created_at, id) of the last row of the previous page."""
    query = select(Prediction).where(
        Prediction.account_id == where.account_id, Prediction.kind == where.kind
    )
    if where.created_after is not None:
        query = query.where(Prediction.created_at > where.created_after)
    if where.created_before is not None:
        query = query.where(Prediction.created_at < where.created_before)
    for column, value in (
        (Prediction.model_ref, where.model_ref),
        (Prediction.version_id, where.version_id),
        (Prediction.status, where.status),
        (Prediction.source, where.source),
        (Prediction.deployment_id, where.deployment_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if before is not None:
        at, last_id = before
        query = query.where(
            (Prediction.created_at < at)
            | ((Prediction.created_at == at) & (Prediction.id < last_id))
        )
    query = query.order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(limit)
    return list(session.scalars(query))


def unfinished(session: Session) -> list[Prediction]:
    """Predictions and trainings not yet terminal, oldest first (for recovery after a restart)."""
    return list(
        session.scalars(
            select(Prediction)
            .where(Prediction.status.in_(("starting", "processing")))
            .order_by(Prediction.created_at, Prediction.id)
        )
    )
