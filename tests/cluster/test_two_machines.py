"""Two machines on this machine, for real: two `modelyard serve` replicas with their own data
folders and `MODELYARD_HOME`s, one PostgreSQL database, one S3 bucket (a local moto server) and a
Ray cluster of a head (127.0.0.2) and a worker node (127.0.0.3) whose resources fake one T4 GPU
(support/raycluster.py). The replicas share no disk: packages, weights and outputs cross through
the bucket, events through the database, and instances run in Ray actors.

What holds (docs/cluster.md): a version pushed to A runs on B; an output file is readable through
both; predictions spread over both run once each and each webhook arrives once; SSE on B follows a
prediction queued on A; a cancel on B stops a prediction running for A; a GPU-SKU version lands on
the faked-GPU node and a second instance waits for it; killing that node's raylet fails its
running prediction saying the machine was lost, and the instance comes back with the node; killing
a replica mid-prediction leaves nothing stuck.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelyard.runtime.sandbox import SANDBOX_ENV

pytest.importorskip("ray")

import httpx
from e2e.live import PACKAGES, Replica, Tls
from live_support import TALLY, create, lines, wait_for
from PIL import Image
from support.postgres import fresh_database
from support.raycluster import RayCluster, ray_cluster
from support.s3 import moto_server
from webhook_receiver import Receiver

LEASE_TTL = 3.0
IDLE_TIMEOUT = 3.0  # instances scale to zero quickly: the GPU test waits for one to go


@dataclass
class Machines:
    url: str  # the database
    cluster: RayCluster
    a: Replica
    b: Replica
    tally: str  # its version, pushed to A


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machines]:
    root = tmp_path_factory.mktemp("machines")
    tls = Tls(root / "tls")
    with (
        fresh_database("machines") as url,
        moto_server() as s3,
        # packages/tally appends to a ledger in the test's folder, which a sandboxed worker may
        # not write: these tests are about machines and replicas, not the sandbox
        ray_cluster(env=s3.environ({SANDBOX_ENV: "off"}), own_homes=True) as cluster,
    ):
        bucket = s3.create_bucket(prefix="blobs")
        cluster.connect()  # this process looks at the actors (where they run)
        ray_env = {k: v for k, v in cluster.env.items() if k.startswith("RAY_")}
        shared = [
            "--database-url", url, "--storage-url", bucket,
            "--backend", "ray", "--ray-address", cluster.address,
            "--lease-ttl", str(LEASE_TTL), "--idle-timeout", str(IDLE_TIMEOUT),
            "--max-instances", "2", "--placement-timeout", "120",
        ]  # fmt: skip
        a, b = (
            Replica(
                data_dir=root / name,
                tls=tls,
                extra_args=shared,
                token="not yet",
                env={**s3.environ({}), **ray_env, "MODELYARD_HOME": str(root / f"home-{name}")},
            )
            for name in ("a", "b")
        )
        try:
            a.start()
            b.start()
            token = a.cli("token", "create", "--username", "admin", "--database-url", url)
            a.token = b.token = token.strip()
            yield Machines(url, cluster, a, b, a.push(TALLY, "admin/tally"))
        finally:
            a.stop()
            b.stop()


def where_actors(prefix: str) -> list[str]:
    """The IPs of the nodes running the live actors whose names start with `prefix`."""
    import ray

    found = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == "modelyard" and entry["name"].startswith(prefix):
            try:
                actor = ray.get_actor(entry["name"], namespace="modelyard")
                node = ray.get(actor.where.remote(), timeout=10)["node_id"]
            except Exception:  # noqa: BLE001, S112 - it ended meanwhile
                continue
            found += [n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node]
    return found


def png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_a_version_pushed_to_a_runs_on_b_and_its_output_file_reads_through_both(
    machines: Machines,
) -> None:
    version = machines.a.push(PACKAGES / "mirror", "admin/mirror")
    prediction = create(machines.b, version, input={"image": png_data_uri()})
    done = wait_for(machines.b, prediction["id"])
    assert done["status"] == "succeeded", done
    output = httpx.URL(done["output"])
    bodies = []
    for server in (machines.a, machines.b):
        with server.http() as client:
            answer = client.get(output.raw_path.decode())
        assert answer.status_code == 200, (server.url, answer.status_code)
        bodies.append(answer.content)
    assert bodies[0] == bodies[1] and bodies[0].startswith(b"\x89PNG")


def test_predictions_spread_over_both_replicas_run_once_and_webhooks_arrive_once(
    machines: Machines, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with Receiver().serving() as receiver:
        created = [
            create(server, machines.tally, input={"tag": f"p{i}", "ledger": str(ledger)},
                   webhook=receiver.url, webhook_events_filter=["completed"])
            for i in range(12)
            for server in [(machines.a, machines.b)[i % 2]]
        ]  # fmt: skip
        for prediction in created:
            assert wait_for(machines.a, prediction["id"])["status"] == "succeeded"
        receiver.wait_for(lambda hits: len(hits) >= len(created))
        time.sleep(1.0)  # a duplicate would arrive now
        ids = [hit.json()["id"] for hit in receiver.wait_for(lambda hits: True)]
    assert sorted(lines(ledger)) == sorted(f"start p{i}" for i in range(12))
    assert sorted(ids) == sorted(p["id"] for p in created)


def test_the_stream_on_b_follows_a_prediction_queued_on_a(
    machines: Machines, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    prediction = create(
        machines.a, machines.tally, input={"tag": "followed", "gate": str(gate)}, stream=True
    )
    wait_for(machines.b, prediction["id"], {"processing"})
    events: list[str] = []

    def follow() -> None:
        with (
            machines.b.http() as client,
            client.stream(
                "GET", prediction["urls"]["stream"], headers={"Accept": "text/event-stream"}
            ) as stream,
        ):
            for line in stream.iter_lines():
                if line.startswith(("event:", "data:")):
                    events.append(line)
                if line.startswith("event: done"):
                    return

    follower = threading.Thread(target=follow)
    follower.start()
    gate.touch()
    follower.join(60)
    assert "event: done" in events
    assert "data: followed" in events  # the output, written by A's instance


def test_a_cancel_on_b_stops_a_prediction_running_for_a(machines: Machines, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    prediction = create(machines.a, machines.tally, input={
        "tag": "c", "ledger": str(ledger), "gate": str(tmp_path / "never")})  # fmt: skip
    wait_for(machines.b, prediction["id"], {"processing"})
    with machines.b.http() as client:
        answer = client.post(f"/v1/predictions/{prediction['id']}/cancel")
    assert answer.status_code == 200, answer.text
    assert wait_for(machines.a, prediction["id"])["status"] == "canceled"
    assert lines(ledger) == ["start c", "cancel c"]  # the model saw the cancel


def test_a_gpu_version_lands_on_the_gpu_node_and_a_second_instance_waits(
    machines: Machines, tmp_path: Path
) -> None:
    with machines.a.http() as client:
        body = {"owner": "admin", "name": "gpu", "visibility": "private", "hardware": "gpu-t4"}
        assert client.post("/v1/models", json=body).status_code == 201
    version = machines.a.push(PACKAGES / "gpu_echo", "admin/gpu")
    first_gate, second_gate = tmp_path / "first", tmp_path / "second"
    first = create(machines.a, version, input={"gate": str(first_gate)})
    assert wait_for(machines.a, first["id"], {"processing"})
    assert where_actors(f"{version}:") == ["127.0.0.3"]
    # A second instance on A (its pool's first is busy; on B it would share A's actor, whose
    # one slot is taken, and wait inside it): no node has a free T4 for it.
    second = create(machines.a, version, input={"gate": str(second_gate)})
    deadline = time.monotonic() + 60
    while "every node offering it is busy" not in (logs := wait_for(
            machines.b, second["id"], {"starting"})["logs"] or ""):  # fmt: skip
        assert time.monotonic() < deadline, logs
        time.sleep(0.2)
    first_gate.touch()
    assert wait_for(machines.a, first["id"])["output"] == "0"  # Ray's one (declared) GPU
    second_gate.touch()  # it runs once the first instance scaled down and freed the GPU
    done = wait_for(machines.b, second["id"])
    assert done["status"] == "succeeded" and done["output"] == "0", done


def test_a_lost_node_fails_its_prediction_and_the_instance_comes_back(
    machines: Machines, tmp_path: Path
) -> None:
    version = machines.a.push(PACKAGES / "gpu_echo", "admin/gpu")  # the same version again
    running = create(machines.a, version, input={"gate": str(tmp_path / "never")})
    wait_for(machines.a, running["id"], {"processing"})
    machines.cluster.kill_worker_raylet()
    failed = wait_for(machines.b, running["id"], timeout=60)
    assert failed["status"] == "failed", failed
    assert "The machine running this prediction was lost" in failed["error"], failed
    machines.cluster.restart_worker()
    again = create(machines.b, version, input={"seconds": 0})
    done = wait_for(machines.b, again["id"])
    assert done["status"] == "succeeded" and done["output"] == "0", done


def test_a_replica_killed_mid_prediction_leaves_nothing_stuck(
    machines: Machines, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    running = create(machines.a, machines.tally, input={"tag": "r", "gate": str(gate)})
    queued = [
        create(machines.a, machines.tally, input={"tag": f"q{i}", "seconds": 0}) for i in range(3)
    ]
    wait_for(machines.b, running["id"], {"processing"})
    machines.a.kill()
    try:
        ended = wait_for(machines.b, running["id"], timeout=120)
        assert ended["status"] == "failed" and "server stopped" in ended["error"], ended
        for prediction in queued:  # run by B, once A's lease expired, or already done by A
            assert wait_for(machines.b, prediction["id"], timeout=120)["status"] == "succeeded"
    finally:
        gate.touch()
        machines.a.start()
