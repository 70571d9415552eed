"""Several API replicas on one PostgreSQL database, in one test process (docs/replicas.md): two
platforms built by the composition root on a fresh database, sharing a blob folder, each with a
fake backend whose model counts its runs and the cancels it sees (replicas_support.py).

What holds: both start together; predictions spread over both run exactly once, each on the
replica that took it, and each webhook is delivered once; followers on one replica (a wait, the
SSE stream) follow a prediction run by the other at once, through NOTIFY; a cancel on one stops
the prediction where it runs; a replica that stops hands back its queue, one that restarts takes
nothing of a live one's, one that dies loses its queue when its lease expires, and one whose lease
lapsed gives up what the others took meanwhile.
(tests/cluster/test_replicas_live.py does the same with real `modelyard serve` processes.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio
from replicas_support import Runs, Side, admin_token, eventually, push, settings, start_side
from sqlalchemy import select, text
from support.postgres import fresh_database
from webhook_receiver import Receiver

from modelyard.engine.replicas import RESTART_ERROR, SAFETY_POLL
from modelyard.store.predictions import NewEvent, NewPrediction, append_events, create_prediction
from modelyard.store.replicas import lease_of, register
from modelyard.store.tables import Model, Version

pytestmark = pytest.mark.asyncio(loop_scope="session")
LEASE_TTL = 1.5  # seconds: renewed every 0.5 s, orphans looked for every 0.75 s


@pytest_asyncio.fixture(loop_scope="session")
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Side, Side, Runs]]:
    """Replicas `a` and `b`, started at the same moment on a fresh database."""
    with fresh_database("replicas") as url:
        runs = Runs()
        configs = [settings(tmp_path, name, url, LEASE_TTL) for name in ("a", "b")]
        token = await asyncio.to_thread(admin_token, configs[0])
        async with AsyncExitStack() as stack:
            a, b = await asyncio.gather(
                *(start_side(c.data_dir.name, c, runs, token, stack) for c in configs)
            )
            yield a, b, runs


async def test_predictions_spread_over_two_replicas_run_once_and_webhooks_go_once(
    pair: tuple[Side, Side, Runs], tmp_path: Path
) -> None:
    a, b, runs = pair
    assert a.platform.engine.replica.id != b.platform.engine.replica.id
    version = await push(a, tmp_path)
    with Receiver().serving() as receiver:
        created = [
            await side.create(version, input={"tag": f"t{i}", "seconds": 0.05},
                              webhook=receiver.url, webhook_events_filter=["completed"])
            for i in range(24)
            for side in ([a, b][i % 2],)
        ]  # fmt: skip
        done = [await a.wait_for(p["id"]) for p in created]
        assert [(p["status"], p["output"]) for p in done] == [
            ("succeeded", f"t{i}") for i in range(24)
        ]
        ids = [p["id"] for p in created]
        assert runs.counts() == {p: 1 for p in ids}  # each ran once
        assert [runs.where(p) for p in ids] == [[("a", "b")[i % 2]] for i in range(24)]
        for prediction_id in ids:  # (off the loop: the senders run on it)
            await asyncio.to_thread(receiver.wait_for_prediction, prediction_id, bool)
        await asyncio.sleep(2.5)  # both outboxes look again (every second): nothing goes twice
        assert sorted(h.json()["id"] for h in receiver.hits) == sorted(ids)


async def test_followers_on_one_replica_follow_a_prediction_run_by_the_other(
    pair: tuple[Side, Side, Runs], tmp_path: Path
) -> None:
    a, b, _ = pair
    version = await push(a, tmp_path)
    gate = tmp_path / "gate"
    prediction = await a.create(version, input={"tag": "followed", "gate": str(gate)}, stream=True)
    follower = b.platform.engine.log
    assert follower.poll_interval == SAFETY_POLL  # LISTEN is up: the poll is a safety net
    # Only a notification can wake the followers now: a poll would come after an hour, long
    # after `wait_until` (60 s) gave up and returned None.
    follower.poll_interval = 3600.0
    waiting = asyncio.create_task(
        follower.wait_until(prediction["id"], lambda p: p.status == "succeeded", timeout=60)
    )
    stream = asyncio.create_task(
        b.client.get(prediction["urls"]["stream"], headers={"Accept": "text/event-stream"})
    )
    await b.wait_for(prediction["id"], {"processing"})
    await asyncio.sleep(0.3)  # both followers are waiting now
    assert not waiting.done() and not stream.done()
    gate.touch()
    ended = await waiting
    sse = await stream
    assert ended is not None and ended.output == "followed"
    assert "event: done" in sse.text and "followed" in sse.text


async def test_a_cancel_on_one_replica_stops_the_prediction_where_it_runs(
    pair: tuple[Side, Side, Runs], tmp_path: Path
) -> None:
    a, b, runs = pair
    version = await push(a, tmp_path)
    gate = str(tmp_path / "never")
    running = await a.create(version, input={"tag": "running", "gate": gate})
    queued = await a.create(version, input={"tag": "queued", "gate": gate})
    await b.wait_for(running["id"], {"processing"})
    answer = await b.client.post(f"/v1/predictions/{queued['id']}/cancel")
    assert answer.status_code == 200 and answer.json()["status"] == "canceled"
    assert (await a.get(queued["id"]))["status"] == "canceled"
    answer = await b.client.post(f"/v1/predictions/{running['id']}/cancel")
    assert answer.status_code == 200 and answer.json()["status"] == "canceled"
    assert ("a", running["id"]) in runs.canceled  # the model on `a` saw the cancel
    await asyncio.sleep(0.3)
    assert runs.where(queued["id"]) == []  # taken out of a's queue: it never ran


async def test_a_replica_that_stops_hands_back_its_queue(
    pair: tuple[Side, Side, Runs], tmp_path: Path
) -> None:
    a, b, runs = pair
    version = await push(a, tmp_path)
    blocker = await a.create(version, input={"tag": "blocker", "gate": str(tmp_path / "never")})
    queued = [await a.create(version, input={"tag": f"q{i}"}) for i in range(4)]
    await b.wait_for(blocker["id"], {"processing"})
    leaving = a.platform.engine.replica.id
    await a.stop()
    with b.platform.db.session() as session:  # gone, not left to expire: claimable at once
        assert lease_of(session, leaving) is None
    done = [await b.wait_for(p["id"]) for p in queued]
    assert [(p["status"], p["output"]) for p in done] == [("succeeded", f"q{i}") for i in range(4)]
    assert [runs.where(p["id"]) for p in queued] == [["b"]] * 4  # each once, on b
    interrupted = await b.get(blocker["id"])
    assert interrupted["status"] == "failed" and runs.where(blocker["id"]) == ["a"]


async def test_a_replica_that_restarts_beside_a_busy_one_takes_none_of_its_queue(
    pair: tuple[Side, Side, Runs], tmp_path: Path
) -> None:
    """The issue's restart: `a` restarts while `b` has a queue; the new `a` (a new replica)
    takes none of it, so nothing runs twice and nothing is failed."""
    a, b, runs = pair
    version = await push(a, tmp_path)
    gate = tmp_path / "gate"
    blocker = await b.create(version, input={"tag": "blocker", "gate": str(gate)})
    queued = [await b.create(version, input={"tag": f"q{i}"}) for i in range(6)]
    await b.wait_for(blocker["id"], {"processing"})
    await a.stop()
    config = settings(tmp_path, "a2", a.platform.settings.db_url, LEASE_TTL)
    token = a.client.headers["Authorization"].removeprefix("Bearer ")
    async with AsyncExitStack() as stack:
        again = await start_side("a2", config, runs, token, stack)
        await asyncio.sleep(LEASE_TTL)  # it has looked for orphans meanwhile
        gate.touch()
        done = [await again.wait_for(p["id"]) for p in (blocker, *queued)]
    assert [p["status"] for p in done] == ["succeeded"] * 7
    assert [runs.where(p["id"]) for p in (blocker, *queued)] == [["b"]] * 7


async def test_a_dead_replicas_predictions_are_taken_when_its_lease_expires(
    pair: tuple[Side, Side, Runs], tmp_path: Path
) -> None:
    """A replica that died (its row stays; nothing renews it): its queued prediction runs once
    elsewhere, its running one fails saying why; neither is touched while the lease lasts."""
    a, b, runs = pair
    version = await push(a, tmp_path)
    db = a.platform.db

    def ghost() -> tuple[str, str]:
        with db.engine.begin() as connection:
            register(connection, "ghost", 2.0)
        with db.session() as session:
            row = session.scalars(select(Version).where(Version.id == version)).one()
            model = session.get(Model, row.model_id)
            assert model is not None
            new = NewPrediction(
                account_id=model.owner_id, model_id=model.id, model_ref="admin/slow",
                version_pk=row.pk, version_id=row.id, input={"tag": "orphan"},
            )  # fmt: skip
            queued = create_prediction(session, new, owner="ghost").id
            running = create_prediction(session, new, owner="ghost").id
        with db.session() as session:
            append_events(session, running, [NewEvent("status", {"status": "processing"})])
        return queued, running

    queued, running = await asyncio.to_thread(ghost)
    await asyncio.sleep(1.0)  # its lease still holds: nobody takes them
    assert runs.where(queued) == [] and (await a.get(running))["status"] == "processing"
    done = await a.wait_for(queued)
    failed = await b.wait_for(running)
    assert (done["status"], done["output"]) == ("succeeded", "orphan")
    assert len(runs.where(queued)) == 1
    assert (failed["status"], failed["error"]) == ("failed", RESTART_ERROR)
    assert runs.where(running) == []


async def test_a_replica_whose_lease_lapsed_gives_up_what_another_took(
    pair: tuple[Side, Side, Runs], tmp_path: Path
) -> None:
    """`a` stalls past its lease (its renewals held back); `b` takes its predictions: the one
    `a` was running fails on `b` (it counts as dead) and `a` stops it; the queued one runs on
    `b` only. `a` joins again under a new id and goes on serving."""
    a, b, runs = pair
    version = await push(a, tmp_path)
    replica = a.platform.engine.replica
    running = await a.create(version, input={"tag": "cut", "gate": str(tmp_path / "never")})
    queued = await a.create(version, input={"tag": "moved"})
    await a.wait_for(running["id"], {"processing"})
    renew = replica.renew

    async def stalled() -> None:
        pass

    replica.renew = stalled  # type: ignore[method-assign]
    await asyncio.to_thread(_expire, a, replica.id)
    moved = await b.wait_for(queued["id"])
    assert (moved["status"], moved["output"]) == ("succeeded", "moved")
    cut = await b.wait_for(running["id"])
    assert (cut["status"], cut["error"]) == ("failed", RESTART_ERROR)
    old = replica.id
    replica.renew = renew  # type: ignore[method-assign]
    await replica.renew()  # finds the lease expired: joins again, drops both
    assert replica.id != old
    await eventually(lambda: ("a", running["id"]) in runs.canceled, "a to stop its run")
    assert runs.where(queued["id"]) == ["b"]
    again = await a.create(version, input={"tag": "after"})
    assert (await a.wait_for(again["id"]))["output"] == "after"
    assert runs.where(again["id"]) == ["a"]


def _expire(side: Side, replica_id: str) -> None:
    with side.platform.db.engine.begin() as connection:
        connection.execute(
            text("UPDATE replicas SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": replica_id},
        )
