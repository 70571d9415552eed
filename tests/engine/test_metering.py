"""The metering ledger as the engine writes it (engine/metering.py), on real SQLite and the
machine's PostgreSQL, through the real writer, event log and instance board.

Figures are checked against the prediction's own `predict_time` and, for setup and idle time,
against an injected clock and the member's `started_at`: never against wall-clock speed. The
pool members are real `Member`s; their instance is a stand-in that only names its spec (its
hardware), since no worker runs here (tests/e2e/test_metering_e2e.py runs real ones).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from support.postgres import fresh_database

from modelyard.billing.hardware import HardwareTable
from modelyard.engine.backend import InstanceSpec
from modelyard.engine.eventlog import EventLog
from modelyard.engine.instances import InstanceBoard
from modelyard.engine.jobs import PoolKey
from modelyard.engine.metering import Metering
from modelyard.engine.pools import Member, Pool, PoolPolicy
from modelyard.engine.urls import Urls
from modelyard.engine.views import prediction_json
from modelyard.settings import Settings
from modelyard.store.accounts import create_account
from modelyard.store.database import Database
from modelyard.store.ledger import rows_of
from modelyard.store.models import add_version, create_model
from modelyard.store.predictions import NewEvent, NewPrediction, create_prediction, done_event
from modelyard.store.tables import Deployment, Model, Prediction, Release, Usage
from modelyard.store.writer import Writer

pytestmark = pytest.mark.asyncio(loop_scope="session")

T4 = HardwareTable().get("gpu-t4")
assert T4 is not None
T4_NANOS = 225_000  # $0.000225 per second
T0 = datetime(2026, 12, 7, 23, 59, 50, tzinfo=UTC)


@dataclass
class Rig:
    db: Database
    writer: Writer
    log: EventLog
    board: InstanceBoard
    owner: int  # ada: owns the models and the deployment
    runner: int  # bob: runs public models
    versions: dict[str, tuple[int, int]]  # model name -> (model id, version pk)
    deployment: int
    now: datetime = T0

    def clock(self) -> datetime:
        return self.now

    def predict(
        self, model: str, account: int, deployment: int | None = None, kind: Any = "prediction"
    ) -> Prediction:
        model_id, version_pk = self.versions[model]
        new = NewPrediction(account, model_id, f"ada/{model}", version_pk, "v" * 64, {},
                            kind=kind, deployment_id=deployment)  # fmt: skip
        with self.db.session() as session:
            prediction = create_prediction(session, new)
        self.log.track(prediction)
        return prediction

    async def finish(self, prediction_id: str, event: NewEvent) -> Prediction:
        self.log.append(prediction_id, NewEvent("status", {"status": "processing"}))
        prediction = self.log.append(prediction_id, event)
        assert await self.log.settled(prediction_id, 30)
        return prediction

    async def committed(self) -> None:
        """Every write queued so far has committed (the writer runs them in order)."""
        await self.writer.write(lambda connection: None)

    def rows(self, prediction_id: str | None = None) -> list[Usage]:
        with self.db.session() as session:
            if prediction_id is not None:
                return rows_of(session, prediction_id)
            return list(session.scalars(select(Usage).order_by(Usage.id)))

    def stored(self, prediction_id: str) -> Prediction:
        with self.db.session() as session:
            prediction = session.get(Prediction, prediction_id)
            assert prediction is not None
            return prediction


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}"
        return
    with fresh_database("metering") as made:
        yield made


@pytest_asyncio.fixture(loop_scope="session")
async def rig(url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    db = Database(url)
    db.migrate()
    versions: dict[str, tuple[int, int]] = {}
    with db.session() as session:
        ada = create_account(session, "ada")
        bob = create_account(session, "bob")
        models = {
            "pub": {"visibility": "public"},
            "priv": {"visibility": "private"},
            "img": {"visibility": "public", "pricing": {"unit": "image", "price_nanos": 3_000_000}},
            "audio": {
                "visibility": "public",
                "pricing": {"unit": "second of audio", "metric": "audio_seconds",
                            "price_nanos": 100_000},
            },
        }  # fmt: skip
        for name, fields in models.items():
            row = create_model(session, ada, name, hardware="gpu-t4", **fields)
            version, _ = add_version(session, row.model, version_id="v" * 64, package_key="p" * 64,
                                     cog_version="0.16.8", openapi_schema={})  # fmt: skip
            versions[name] = (row.model.id, version.pk)
        deployment = Deployment(owner_id=ada.id, name="dep")
        session.add(deployment)
        session.flush()
        session.add(Release(deployment_id=deployment.id, number=1, model_id=versions["pub"][0],
                            version_pk=versions["pub"][1], hardware="gpu-t4",
                            created_by_id=ada.id))  # fmt: skip
        session.flush()
        ids = (ada.id, bob.id, deployment.id)
    writer = Writer(db)
    metering = Metering(writer)  # wired as the engine wires it
    board = InstanceBoard(Settings(data_dir=tmp_path), writer, lambda: "r-test")
    board.listeners.append(metering)
    board.interval = 0  # no healthchecks: these members have no worker
    rig = Rig(db, writer, EventLog(db, writer, metering), board, ids[0], ids[1], versions, ids[2])
    metering.clock = rig.clock
    try:
        yield rig
    finally:
        writer.stop()
        db.dispose()


def key_of(rig: Rig, model: str, deployment: int | None = None) -> PoolKey:
    return PoolKey(rig.versions[model][1], "predict", deployment)


def pool() -> Pool:
    async def never(*_: Any) -> Any:
        raise AssertionError("not started")

    return Pool("p", PoolPolicy(), never, never, lambda *_: None, lambda *_: None)


def instance() -> Any:
    spec = InstanceSpec(version_id="v", package_key="p", package_dir=Path("."), mode="predict",
                        schema={}, hardware=T4)  # fmt: skip
    return SimpleNamespace(spec=spec, lost=False)


async def boot(rig: Rig, key: PoolKey, booted_by: str, setup_seconds: float) -> Member:
    """A member booted for `booted_by` (as Pool._boot_then_run tells the board), busy with it."""
    watch, p = rig.board.watcher(key), pool()
    member = Member(instance=None, log_to=booted_by, started_at=rig.now)
    member.busy = 1
    watch.changed(p, member)
    member.instance = instance()
    watch.changed(p, member)
    rig.now += timedelta(seconds=setup_seconds)
    member.ready = True
    watch.changed(p, member)
    return member


async def idle_then_stop(rig: Rig, key: PoolKey, member: Member, periods: list[float]) -> None:
    """The member idles for each of `periods` seconds (busy 1 s between), then stops."""
    watch, p = rig.board.watcher(key), pool()
    for n, seconds in enumerate(periods):
        member.busy = 0
        watch.changed(p, member)
        rig.now += timedelta(seconds=seconds)
        if n < len(periods) - 1:
            member.busy = 1
            watch.changed(p, member)
            rig.now += timedelta(seconds=1)
    member.stopping = True
    watch.changed(p, member)
    watch.gone(member)
    await rig.committed()


async def test_active_time_is_the_predictions_own_predict_time(rig: Rig) -> None:
    prediction = rig.predict("pub", rig.runner)
    rig.board.watcher(key_of(rig, "pub")).changed(pool(), Member(instance=instance()))
    done = await rig.finish(prediction.id, done_event("succeeded", output="x",
                                                      metrics={"predict_time": 2.5}))  # fmt: skip
    [row] = rig.rows(prediction.id)
    assert (row.key, row.phase, row.seconds, row.hardware) == (
        f"{prediction.id}:active", "active", 2.5, "gpu-t4",
    )  # fmt: skip
    assert (row.quantity, row.unit, row.unit_price_nanos, row.billed) == (2.5, "second", T4_NANOS,
                                                                          True)  # fmt: skip
    assert row.cost_nanos == 562_500 and row.account_id == rig.runner
    assert row.model_id == rig.versions["pub"][0] and row.deployment_id is None
    assert row.day == done.completed_at.date()  # type: ignore[union-attr]
    assert rig.stored(prediction.id).cost_nanos == 562_500
    # The live prediction shows it as soon as it is committed, metrics unchanged.
    body = prediction_json(done, Urls("http://x"))
    assert body["cost"] == {"usd": "0.000562500", "nanos": 562_500}
    assert body["metrics"]["predict_time"] == 2.5


async def test_a_prediction_that_never_ran_records_nothing(rig: Rig) -> None:
    prediction = rig.predict("pub", rig.runner)
    rig.log.append(prediction.id, done_event("canceled"))  # canceled while queued
    assert await rig.log.settled(prediction.id, 30)
    assert rig.rows(prediction.id) == []
    assert rig.stored(prediction.id).cost_nanos is None
    assert "cost" not in prediction_json(rig.stored(prediction.id), Urls("http://x"))


async def test_exactly_once_under_a_replayed_finish_and_a_restart(rig: Rig, url: str) -> None:
    prediction = rig.predict("priv", rig.owner)
    done = await rig.finish(prediction.id, done_event("succeeded", output="x",
                                                      metrics={"predict_time": 4.0}))  # fmt: skip
    assert rig.log.metering is not None
    meter = rig.log.metering.finish(done)
    assert meter is not None
    await rig.writer.write(meter)  # the same write again (a retried commit)
    rig.log.append(prediction.id, done_event("failed", error="again"))  # a second end: dropped
    assert await rig.log.settled(prediction.id, 30)
    # Another process (a restart, another replica) meters the stored prediction again.
    db2 = Database(url)
    writer2 = Writer(db2)
    try:
        stored = rig.stored(prediction.id)
        again = Metering(writer2).finish(stored)
        assert again is not None
        await writer2.write(again)
        assert again.cost_nanos == 900_000  # nothing added: the sum of the one row
    finally:
        writer2.stop()
        db2.dispose()
    [row] = rig.rows(prediction.id)
    assert row.cost_nanos == 900_000  # 4 s of a T4
    assert rig.stored(prediction.id).cost_nanos == 900_000


async def test_a_private_model_bills_setup_idle_and_active(rig: Rig) -> None:
    key = key_of(rig, "priv")
    prediction = rig.predict("priv", rig.owner)
    member = await boot(rig, key, prediction.id, setup_seconds=12.0)
    await rig.committed()
    assert rig.rows(prediction.id) == []  # the setup row waits for the prediction's end
    await rig.finish(prediction.id, done_event("succeeded", output="x",
                                               metrics={"predict_time": 2.0}))  # fmt: skip
    [setup] = [r for r in rig.rows(prediction.id) if r.phase == "setup"]
    assert (setup.key, setup.phase, setup.seconds, setup.billed) == (
        f"{prediction.id}:setup", "setup", 12.0, True,
    )  # fmt: skip
    assert setup.cost_nanos == 12 * T4_NANOS and setup.account_id == rig.owner
    # Its cost is its billed rows: setup and active.
    assert rig.stored(prediction.id).cost_nanos == 14 * T4_NANOS
    await idle_then_stop(rig, key, member, [6.0, 10.0])
    idle = [r for r in rig.rows() if r.phase == "idle"]
    assert [(r.key, r.seconds, r.cost_nanos, r.billed) for r in idle] == [
        (f"{member.id}:idle:1", 6.0, 6 * T4_NANOS, True),
        (f"{member.id}:idle:2", 10.0, 10 * T4_NANOS, True),
    ]
    assert {r.account_id for r in idle} == {rig.owner} and idle[0].prediction_id is None


async def test_short_idle_periods_add_up_in_one_row(rig: Rig) -> None:
    """Under load an instance idles a moment between predictions: those moments share a row
    until it holds IDLE_ROW_SECONDS, not a row (and a write) each."""
    rig.now += timedelta(minutes=1)  # past T0's midnight, which would cut a row
    key = key_of(rig, "priv")
    prediction = rig.predict("priv", rig.owner)
    member = await boot(rig, key, prediction.id, setup_seconds=1.0)
    await idle_then_stop(rig, key, member, [0.5] * 12 + [3.0])
    idle = [(r.key, r.seconds) for r in rig.rows() if r.phase == "idle"]
    # 10 x 0.5 s fill the first row; the rest is written when the instance leaves
    assert idle == [(f"{member.id}:idle:1", 5.0), (f"{member.id}:idle:2", 4.0)]


async def test_a_pricing_change_made_here_is_billed_at_once(rig: Rig) -> None:
    """The billing context is kept a moment; `Metering.forget` (called after a model's update
    commits) makes the next end read it again."""
    first = rig.predict("img", rig.runner)
    three = ["a.png", "b.png", "c.png"]
    await rig.finish(first.id, done_event("succeeded", output=three,
                                          metrics={"predict_time": 1.0}))  # fmt: skip
    with rig.db.session() as session:
        model = session.get(Model, rig.versions["img"][0])
        assert model is not None
        model.pricing = {"unit": "image", "price_nanos": 1_000_000}
    assert rig.log.metering is not None
    rig.log.metering.forget()
    second = rig.predict("img", rig.runner)
    await rig.finish(second.id, done_event("succeeded", output=three,
                                           metrics={"predict_time": 1.0}))  # fmt: skip
    assert rig.stored(first.id).cost_nanos == 9_000_000
    assert rig.stored(second.id).cost_nanos == 3_000_000


async def test_a_public_model_bills_active_time_only(rig: Rig) -> None:
    key = key_of(rig, "pub")
    prediction = rig.predict("pub", rig.runner)
    member = await boot(rig, key, prediction.id, setup_seconds=30.0)
    await rig.finish(prediction.id, done_event("succeeded", output="x",
                                               metrics={"predict_time": 1.0}))  # fmt: skip
    await idle_then_stop(rig, key, member, [5.0])
    setup, active = rig.rows(prediction.id)
    assert (setup.phase, setup.seconds, setup.cost_nanos, setup.billed) == ("setup", 30.0, 0, False)
    assert (active.phase, active.cost_nanos, active.billed) == ("active", T4_NANOS, True)
    [idle] = [r for r in rig.rows() if r.phase == "idle"]
    assert (idle.seconds, idle.cost_nanos, idle.billed) == (5.0, 0, False)
    assert rig.stored(prediction.id).cost_nanos == T4_NANOS


async def test_a_deployment_bills_everything_to_its_owner(rig: Rig) -> None:
    key = key_of(rig, "pub", rig.deployment)
    prediction = rig.predict("pub", rig.runner, deployment=rig.deployment)
    member = await boot(rig, key, prediction.id, setup_seconds=8.0)
    await rig.finish(prediction.id, done_event("succeeded", output="x",
                                               metrics={"predict_time": 3.0}))  # fmt: skip
    await idle_then_stop(rig, key, member, [2.0])
    rows = rig.rows()
    assert [(r.phase, r.seconds, r.cost_nanos) for r in rows] == [
        ("setup", 8.0, 8 * T4_NANOS), ("active", 3.0, 3 * T4_NANOS), ("idle", 2.0, 2 * T4_NANOS),
    ]  # fmt: skip
    assert {(r.account_id, r.deployment_id, r.billed) for r in rows} == {
        (rig.owner, rig.deployment, True)
    }
    assert rig.stored(prediction.id).cost_nanos == 11 * T4_NANOS


async def test_idle_periods_are_cut_at_utc_midnight_by_their_end(rig: Rig) -> None:
    """A row's `day` is the UTC day its usage ended (T0 is 10 s before midnight)."""
    key = key_of(rig, "priv")
    prediction = rig.predict("priv", rig.owner)
    member = await boot(rig, key, prediction.id, setup_seconds=5.0)
    await idle_then_stop(rig, key, member, [20.0])
    [setup] = [r for r in rig.rows() if r.phase == "setup"]
    [idle] = [r for r in rig.rows() if r.phase == "idle"]
    assert str(setup.day) == "2026-12-07" and str(idle.day) == "2026-12-08"


async def test_per_output_pricing_counts_outputs(rig: Rig) -> None:
    prediction = rig.predict("img", rig.runner)
    rig.board.watcher(key_of(rig, "img")).changed(pool(), Member(instance=instance()))
    await rig.finish(prediction.id, done_event("succeeded", output=["a.png", "b.png", "c.png"],
                                               metrics={"predict_time": 7.0}))  # fmt: skip
    [row] = rig.rows(prediction.id)
    assert (row.key, row.phase, row.seconds, row.quantity, row.unit) == (
        f"{prediction.id}:output", "output", 7.0, 3.0, "image",
    )  # fmt: skip
    assert (row.unit_price_nanos, row.cost_nanos, row.hardware) == (3_000_000, 9_000_000, "gpu-t4")
    assert rig.stored(prediction.id).cost_nanos == 9_000_000


async def test_per_second_of_audio_reads_the_models_metric(rig: Rig) -> None:
    prediction = rig.predict("audio", rig.runner)
    metrics = {"predict_time": 1.5, "audio_seconds": 12.5}
    await rig.finish(prediction.id, done_event("succeeded", output="a.wav", metrics=metrics))
    [row] = rig.rows(prediction.id)
    assert (row.quantity, row.unit, row.cost_nanos) == (12.5, "second of audio", 1_250_000)


async def test_a_training_is_metered_on_its_own_pools_hardware(rig: Rig) -> None:
    training = rig.predict("pub", rig.runner, kind="training")
    h100 = HardwareTable().get("gpu-h100")
    spec = InstanceSpec(version_id="v", package_key="p", package_dir=Path("."), mode="train",
                        schema={}, hardware=h100)  # fmt: skip
    member = Member(instance=SimpleNamespace(spec=spec, lost=False))  # type: ignore[arg-type]
    rig.board.watcher(PoolKey(rig.versions["pub"][1], "train")).changed(pool(), member)
    await rig.finish(training.id, done_event("succeeded", output={"version": "x"},
                                             metrics={"predict_time": 10.0}))  # fmt: skip
    [row] = rig.rows(training.id)
    assert (row.phase, row.hardware, row.cost_nanos) == ("active", "gpu-h100", 15_250_000)
