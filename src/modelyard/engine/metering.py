"""The engine's side of the metering ledger: what it records, when, in which transaction
(docs/billing.md; the rules are billing/pricing.py, the writes store/ledger.py).

- **active** (or **output**, for a model priced per output): when a prediction or training
  ends, in the transaction that commits its terminal event (engine/eventlog.py calls `finish`),
  `metrics.predict_time` seconds, the prediction's own figure; and its `cost_nanos`. One that
  never ran (no `predict_time`: canceled while queued, failed at boot) records nothing.
- **setup**: when an instance becomes ready, the seconds from its `started_at` to then, for
  the prediction that booted it (`Member.log_to`).
- **idle**: each period an instance is idle (from idle to busy, stopping or gone), for the
  owner of its model or deployment.

Setup and idle rows wait in memory and are written in the transaction of the next prediction's
end (or when an instance leaves): a commit per prediction, not one per idle period as well. An
instance's idle periods add up in one row until it holds `IDLE_ROW_SECONDS`, is
`IDLE_ROW_SPAN` seconds old, would cross a UTC midnight, or the instance leaves: under load an
instance is idle for a millisecond between predictions, and a row for each would double the
ledger's writes. Idle time still in memory when the process dies is lost, as it always was; none
is written twice (every row has its key).

A model's (and deployment's) billing context is read once and kept `CONTEXT_TTL` seconds, or
until `forget` (a change of a model's pricing, visibility or hardware made here, or of a
deployment's release).

The instance board (engine/instances.py) tells `member_changed`/`member_gone` of every member, as the pools
tell it; the hardware each pool's instances run on is learnt there, so the active row names
the SKU (and price) the instance really had.

The engine makes one `Metering` and gives it to its event log and, as a listener, to its
instance board.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from modelyard.billing.hardware import Hardware, HardwareTable
from modelyard.billing.pricing import (
    Charge,
    PricingError,
    output_charge,
    parse_pricing,
    seconds_charge,
)
from modelyard.caches import TtlCache
from modelyard.runtime.runner import Mode
from modelyard.store import ledger
from modelyard.store.predictions import TERMINAL
from modelyard.store.tables import Prediction, utcnow
from modelyard.store.writer import Writer

from .jobs import PoolKey
from .pools import Member

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
IDLE_ROW_SECONDS = 5.0  # idle seconds one row gathers before it is written
IDLE_ROW_SPAN = 60.0  # seconds after its first period ended that a row is written anyway
CONTEXT_TTL = 2.0  # seconds a billing context is kept (a change on another replica shows then)


@dataclass(frozen=True)
class Recorded:
    """A ledger row that committed (told to `Metering.listeners`: the metrics count it)."""

    version_pk: int
    model: str  # owner/name where the prediction said it; "" for an instance's rows
    hardware: str
    phase: str
    seconds: float
    cost_nanos: int

    @classmethod
    def of(cls, version_pk: int, model: str, row: dict[str, Any]) -> Recorded:
        return cls(version_pk, model, row["hardware"], row["phase"], row["seconds"],
                   row["cost_nanos"] if row["billed"] else 0)  # fmt: skip


@dataclass
class _IdleRow:
    """A member's idle periods added up so far, not yet written."""

    key: str
    hardware: Hardware
    opened: datetime  # when its first period ended
    ended: datetime  # when its last period ended
    seconds: float = 0.0


@dataclass
class _Meter:
    """What the ledger knows of one member."""

    key: PoolKey
    ready: bool = False
    idle_since: datetime | None = None
    idle_periods: int = 0
    idle: _IdleRow | None = None


class Finish:
    """The write that meters one prediction's end, and what it found (`cost_nanos`, set on
    the writer thread once the transaction ran; read after it committed)."""

    def __init__(self, metering: Metering, prediction: Prediction, hardware: Hardware | None):
        self.prediction_id = prediction.id
        self.account_id = prediction.account_id
        self.model_id = prediction.model_id
        self.deployment_id = prediction.deployment_id
        self.predict_time = float(prediction.metrics["predict_time"])
        self.output = prediction.output
        self.metrics = dict(prediction.metrics or {})
        self.ended = prediction.completed_at or metering.clock()
        self.hardware = hardware
        self.metering = metering
        self.version_pk, self.model = prediction.version_pk, prediction.model_ref
        self.cost_nanos: int | None = None
        # Instances' setup and idle rows that waited for a prediction's end, to share its
        # transaction (one commit per prediction, not two or three).
        self.pending = metering.take_pending()
        self.recorded: list[Recorded] = []  # the rows it added (none where they were there)

    def __call__(self, connection: Connection) -> None:
        self.recorded = [added for write in self.pending if (added := write(connection))]
        found = self.metering.context(
            connection, model_id=self.model_id, deployment_id=self.deployment_id
        )
        if found is None:  # the model is gone: nothing to charge against
            return
        # The SKU its instance ran on; else (metered after a restart) the one its pool is set to.
        hardware = self.hardware or self.metering.table.get(found.hardware)
        if hardware is None:  # a SKU the table dropped since: the seconds, at no price
            hardware = Hardware(found.hardware, found.hardware, 0.0)
        pricing = _pricing(found.pricing, found.model_id)
        deployment = found.deployment_owner_id is not None
        if pricing is not None:
            charge = output_charge(pricing, self.predict_time, self.output, self.metrics)
        else:
            charge = seconds_charge("active", self.predict_time, hardware,
                                    private=found.private, deployment=deployment)  # fmt: skip
        payer = found.deployment_owner_id or self.account_id
        row = _row(f"{self.prediction_id}:{charge.phase}", payer, self.prediction_id, found,
                   hardware.sku, charge, self.ended)  # fmt: skip
        if ledger.record(connection, [row]):
            self.recorded.append(Recorded.of(self.version_pk, self.model, row))
        self.cost_nanos = ledger.settle_prediction(connection, self.prediction_id)


class Metering:
    """Records setup, idle and active rows (see the module doc)."""

    def __init__(self, writer: Writer, table: HardwareTable | None = None) -> None:
        self.writer = writer
        self.table = table or HardwareTable()  # prices when no instance said its SKU
        self.clock: Clock = utcnow  # tests set a clock where an exact figure matters
        self.hardware: dict[PoolKey, Hardware] = {}  # what each pool's instances ran on
        self._members: dict[str, _Meter] = {}
        self._pending: list[_InstanceRow] = []  # setup and idle rows for the next commit
        self._contexts: TtlCache[ledger.BillingContext] = TtlCache(CONTEXT_TTL)
        # Told of every row once it committed (on the loop, or on the writer's thread).
        self.listeners: list[Callable[[Recorded], None]] = []

    def context(
        self,
        connection: Connection,
        *,
        model_id: int | None = None,
        version_pk: int | None = None,
        deployment_id: int | None = None,
    ) -> ledger.BillingContext | None:
        """`ledger.context`, kept a moment (on the writer's thread: no lock needed beyond the
        cache's generation check)."""
        key = (model_id, version_pk, deployment_id)
        found = self._contexts.get(key)
        if found is None:
            generation = self._contexts.generation
            found = ledger.context(connection, model_id=model_id, version_pk=version_pk,
                                   deployment_id=deployment_id)  # fmt: skip
            if found is not None:
                self._contexts.put(key, found, generation)
        return found

    def forget(self) -> None:
        """A model's or deployment's billing context changed (committed): read it afresh."""
        self._contexts.clear()

    # -- the end of a prediction (engine/eventlog.py) --------------------------------------

    def finish(self, prediction: Prediction) -> Finish | None:
        """The write that meters `prediction`'s end, or None when it never ran."""
        if prediction.status not in TERMINAL:
            return None
        predict_time = (prediction.metrics or {}).get("predict_time")
        if isinstance(predict_time, bool) or not isinstance(predict_time, int | float):
            return None
        mode: Mode = "train" if prediction.kind == "training" else "predict"
        key = PoolKey(prediction.version_pk, mode, prediction.deployment_id)
        return Finish(self, prediction, self.hardware.get(key))

    # -- instances (engine/instances.py) ---------------------------------------------------

    def member_changed(self, key: PoolKey, member: Member) -> None:
        """A member's state changed: its setup ends when it is first ready; an idle period
        starts or ends."""
        meter = self._members.get(member.id)
        if meter is None:
            meter = self._members[member.id] = _Meter(key)
        instance = member.instance
        if instance is not None:
            self.hardware[key] = instance.spec.hardware
        now = self.clock()
        if member.ready and not meter.ready:
            meter.ready = True
            if instance is not None and member.log_to:
                seconds = (now - member.started_at).total_seconds()
                self._setup(key, member.log_to, instance.spec.hardware, seconds, now)
        idle = member.state == "idle"
        if idle and meter.idle_since is None:
            meter.idle_since = now
        elif not idle and meter.idle_since is not None:
            self._idle_ended(member, meter, now)

    def member_gone(self, key: PoolKey, member: Member) -> None:
        """A member left: an idle period it was in ends now, and what waits is written (no
        prediction's end may come to carry it)."""
        meter = self._members.pop(member.id, None)
        if meter is not None:
            if meter.idle_since is not None:
                self._idle_ended(member, meter, self.clock())
            self._close_idle(meter)
        self._flush()

    def take_pending(self) -> list[_InstanceRow]:
        pending, self._pending = self._pending, []
        return pending

    def _idle_ended(self, member: Member, meter: _Meter, now: datetime) -> None:
        since, meter.idle_since = meter.idle_since, None
        assert since is not None
        instance = member.instance
        seconds = (now - since).total_seconds()
        if instance is None or seconds <= 0:
            return
        row = meter.idle
        if row is not None and row.ended.date() != now.date():  # a row's day is its end's
            self._close_idle(meter)
            row = None
        if row is None:
            meter.idle_periods += 1
            row = meter.idle = _IdleRow(f"{member.id}:idle:{meter.idle_periods}",
                                        instance.spec.hardware, now, now)  # fmt: skip
        row.seconds += seconds
        row.ended = now
        if row.seconds >= IDLE_ROW_SECONDS or (now - row.opened).total_seconds() >= IDLE_ROW_SPAN:
            self._close_idle(meter)

    def _close_idle(self, meter: _Meter) -> None:
        """The member's idle row is complete: it waits for the next commit."""
        row, meter.idle = meter.idle, None
        if row is not None:
            self._instance_row(row.key, meter.key, None, "idle", row.hardware, row.seconds,
                               row.ended)  # fmt: skip

    def _setup(
        self, key: PoolKey, prediction_id: str, hardware: Hardware, seconds: float, now: datetime
    ) -> None:
        self._instance_row(f"{prediction_id}:setup", key, prediction_id, "setup", hardware,
                           seconds, now)  # fmt: skip

    def _instance_row(
        self,
        row_key: str,
        key: PoolKey,
        prediction_id: str | None,
        phase: Any,
        hardware: Hardware,
        seconds: float,
        now: datetime,
    ) -> None:
        """A setup or idle row for the owner of the pool's model or deployment, written with
        the next prediction's end (or when a member leaves)."""
        self._pending.append(_InstanceRow(self, row_key, key, prediction_id, phase, hardware,
                                          seconds, now))  # fmt: skip

    def _flush(self) -> None:
        pending = self.take_pending()
        if not pending:
            return
        added: list[Recorded] = []

        def write(connection: Connection) -> None:
            added[:] = [row for each in pending if (row := each(connection))]

        def written(done: Future[None]) -> None:
            for each in pending:
                _log_failure(each.row_key, done)
            if done.exception() is None:
                self._tell(added)

        try:
            future = self.writer.submit(write)
        except RuntimeError:  # the writer stopped (shutdown): these are not recorded
            log.warning("usage not recorded: the database writer has stopped (%s)",
                        ", ".join(each.row_key for each in pending))  # fmt: skip
            return
        future.add_done_callback(written)

    def committed(self, finish: Finish) -> None:
        """A prediction's end committed with `finish`: tell the listeners of its rows."""
        self._tell(finish.recorded)

    def _tell(self, rows: list[Recorded]) -> None:
        for row in rows:
            for listener in self.listeners:
                try:
                    listener(row)
                except Exception:  # a listener's bug must not lose the next row
                    log.exception("a listener of the ledger failed on %s", row)


@dataclass(frozen=True)
class _InstanceRow:
    """A setup or idle row waiting to be written: `__call__` writes it in a transaction."""

    metering: Metering
    row_key: str
    key: PoolKey
    prediction_id: str | None
    phase: Any
    hardware: Hardware
    seconds: float
    ended: datetime

    def __call__(self, connection: Connection) -> Recorded | None:
        """Write it (nothing when its key is there already); the row added."""
        key = self.key
        found = self.metering.context(connection, version_pk=key.version_pk,
                                      deployment_id=key.deployment_id)  # fmt: skip
        if found is None:
            return None
        charge = seconds_charge(self.phase, self.seconds, self.hardware, private=found.private,
                                deployment=found.deployment_owner_id is not None)  # fmt: skip
        row = _row(self.row_key, found.owner_id, self.prediction_id, found, self.hardware.sku,
                   charge, self.ended)  # fmt: skip
        added = ledger.record(connection, [row])
        if self.prediction_id is not None:
            ledger.settle_prediction(connection, self.prediction_id)
        return Recorded.of(key.version_pk, "", row) if added else None


def _row(
    key: str,
    account_id: int,
    prediction_id: str | None,
    found: ledger.BillingContext,
    sku: str,
    charge: Charge,
    ended: datetime,
) -> dict[str, Any]:
    return ledger.usage_row(
        key=key, account_id=account_id, prediction_id=prediction_id, model_id=found.model_id,
        deployment_id=found.deployment_id if found.deployment_owner_id is not None else None,
        hardware=sku, phase=charge.phase, seconds=charge.seconds, quantity=charge.quantity,
        unit=charge.unit, unit_price_nanos=charge.unit_price_nanos, cost_nanos=charge.cost_nanos,
        billed=charge.billed, day=ended.date(), created_at=utcnow(),
    )  # fmt: skip


def _pricing(value: Any, model_id: int) -> Any:
    try:
        return parse_pricing(value)
    except PricingError as exc:  # the API validates it; a hand-edited row bills by the second
        log.warning("model %s has an unusable pricing (%s): billing its seconds", model_id, exc)
        return None


def _log_failure(key: str, done: Future[None]) -> None:
    error = done.exception()
    if error is not None:
        log.warning("usage %s not recorded: %s", key, str(error).splitlines()[0][:200])
