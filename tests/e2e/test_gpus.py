"""GPUs on one machine, seen from outside: `modelyard serve --gpus 0:t4,1:t4` (two fake T4s; the
test machines have no GPU) with a model on `gpu-t4` and up to three instances.

The package (packages/gpu_echo) answers with the `CUDA_VISIBLE_DEVICES` its worker got. Two
predictions held on a gate file run at once on two instances with different GPUs; a third boots a
third instance, which waits for a GPU (its logs say so) and runs once an idle instance has scaled
down (`--idle-timeout 1`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live import PACKAGES, LiveServer, Tls, serving
from predicting import TERMINAL, eventually, get, start, wait_for

WAITING = "waiting for a free T4 GPU: 2 of 2 in use by other instances"


@pytest.fixture(scope="module")
def gpus(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    args = ("--gpus", "0:t4,1:t4", "--max-instances", "3", "--idle-timeout", "1")
    with serving(tmp_path_factory, tls, "gpus", *args) as live:
        yield live


def test_hardware_lists_the_declared_gpus(gpus: LiveServer) -> None:
    with gpus.http() as client:
        skus = [entry["sku"] for entry in client.get("/v1/hardware").json()]
    assert skus[0] == "cpu" and "gpu-t4" in skus
    assert not any(sku.startswith(("gpu-l40s", "gpu-h100", "gpu-t4-")) for sku in skus)


def test_two_instances_get_two_gpus_and_a_third_waits_for_one(
    gpus: LiveServer, tmp_path: Path
) -> None:
    with gpus.http() as client:
        created = client.post(
            "/v1/models",
            json={"owner": "admin", "name": "gpu-echo", "visibility": "private",
                  "hardware": "gpu-t4"},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        version = gpus.push(PACKAGES / "gpu_echo", "admin/gpu-echo")
        gate = tmp_path / "gate"
        held = [start(client, version, gate=str(gate)) for _ in range(2)]
        # Both run at once, each on an instance of its own.
        eventually(lambda: all(ran(client, p["id"]) for p in held), "both predictions to run")

        third = start(client, version, seconds=0)
        waiting = eventually(
            lambda: WAITING in ((p := get(client, third["id"]))["logs"] or "") and p,
            "the third instance to wait for a GPU",
        )
        assert waiting["status"] == "starting"

        gate.touch()  # both finish; an idle instance scales down and frees its GPU
        done = [wait_for(client, p["id"], TERMINAL) for p in [*held, third]]
    assert [p["status"] for p in done] == ["succeeded"] * 3, [p.get("error") for p in done]
    assert {done[0]["output"], done[1]["output"]} == {"0", "1"}  # never one GPU for two
    assert done[2]["output"] in ("0", "1")
    assert done[2]["logs"].count(WAITING) == 1


def ran(client: httpx.Client, prediction_id: str) -> bool:
    return "CUDA_VISIBLE_DEVICES=" in (get(client, prediction_id)["logs"] or "")
