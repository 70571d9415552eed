"""The GPU inventory of one machine (engine/gpus.py): reading `--gpus` and `nvidia-smi`, naming
models as the hardware table does, and handing GPUs to instances first come first served.

There is no GPU on the test machines: `nvidia-smi` output is given as text (real listings), and
a fake `nvidia-smi` on PATH stands in for the command itself.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from modelyard.billing.hardware import CPU, DEFAULT_HARDWARE, Hardware
from modelyard.engine.gpus import (
    Gpu,
    GpuConfigError,
    GpuInventory,
    PlacementFailed,
    gpu_model_slug,
    parse_gpus_setting,
    parse_nvidia_smi,
    query_machine,
)
from modelyard.settings import Settings

T4 = Hardware("gpu-t4", "Nvidia T4 GPU", 0.000225, gpus=1, gpu_model="t4")
T4_2X = Hardware("gpu-t4-2x", "2x Nvidia T4 GPU", 0.00045, gpus=2, gpu_model="t4")
L40S = Hardware("gpu-l40s", "Nvidia L40S GPU", 0.000975, gpus=1, gpu_model="l40s")

LISTING = (
    "0, Tesla T4, GPU-4a2b0f3e-1111-2222-3333-444455556666\n"
    "1, Tesla T4, GPU-4a2b0f3e-1111-2222-3333-444455556667\n"
    "2, NVIDIA A100-SXM4-80GB, GPU-0c5e6f2a-aaaa-bbbb-cccc-ddddeeeeffff\n"
    "3, NVIDIA GeForce RTX 4090, GPU-9d8c7b6a-aaaa-bbbb-cccc-ddddeeeeffff\n"
    "4, NVIDIA L40S, [N/A]\n"
    "5, [Unknown Error], [Unknown Error]\n"
    "\n"
    "No devices were found\n"
)


def t4s(n: int, timeout: float = 5.0) -> GpuInventory:
    return GpuInventory([Gpu(str(i), "t4") for i in range(n)], placement_timeout=timeout)


# --- names and listings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Tesla T4", "t4"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA A40", "a40"),
        ("NVIDIA A10G", "a10g"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb"),
        ("NVIDIA A100-PCIE-40GB", "a100-40gb"),
        ("Tesla V100-SXM2-16GB", "v100-16gb"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 PCIe", "h100"),
        ("NVIDIA H100 NVL", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("NVIDIA RTX A6000", "rtx-a6000"),
        ("NVIDIA RTX 6000 Ada Generation", "rtx-6000-ada"),
        ("Quadro RTX 8000", "rtx-8000"),
    ],
)
def test_driver_names_become_the_tables_slugs(name: str, slug: str) -> None:
    assert gpu_model_slug(name) == slug
    assert gpu_model_slug(slug) == slug  # a slug is its own slug (`--gpus 0:a100-80gb`)


def test_every_gpu_model_of_the_table_is_its_own_slug() -> None:
    for entry in DEFAULT_HARDWARE:
        if entry.gpu_model is not None:
            assert gpu_model_slug(entry.gpu_model) == entry.gpu_model


def test_nvidia_smi_listing() -> None:
    """Real `--query-gpu=index,name,uuid --format=csv,noheader` lines; errors and GPUs the
    driver cannot name are left out; the index is what CUDA_VISIBLE_DEVICES gets."""
    assert parse_nvidia_smi(LISTING) == [
        Gpu("0", "t4", "Tesla T4", "GPU-4a2b0f3e-1111-2222-3333-444455556666"),
        Gpu("1", "t4", "Tesla T4", "GPU-4a2b0f3e-1111-2222-3333-444455556667"),
        Gpu("2", "a100-80gb", "NVIDIA A100-SXM4-80GB", "GPU-0c5e6f2a-aaaa-bbbb-cccc-ddddeeeeffff"),
        Gpu("3", "rtx-4090", "NVIDIA GeForce RTX 4090", "GPU-9d8c7b6a-aaaa-bbbb-cccc-ddddeeeeffff"),
        Gpu("4", "l40s", "NVIDIA L40S", ""),
    ]
    assert parse_nvidia_smi("") == []
    failed = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    assert parse_nvidia_smi(failed) == []


def fake_nvidia_smi(folder: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = folder / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_the_machine_is_asked_with_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = tmp_path / "args"
    fake_nvidia_smi(
        tmp_path, f'echo "$@" > {args}\necho "0, NVIDIA H100 80GB HBM3, GPU-1"\n', monkeypatch
    )
    assert query_machine() == [Gpu("0", "h100", "NVIDIA H100 80GB HBM3", "GPU-1")]
    assert args.read_text().split() == ["--query-gpu=index,name,uuid", "--format=csv,noheader"]


def test_a_broken_or_missing_nvidia_smi_means_no_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvidia_smi(
        tmp_path,
        'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."\n'
        "exit 9\n",
        monkeypatch,
    )
    assert query_machine() == []
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert query_machine() == []


# --- the --gpus setting ---------------------------------------------------------------------------


def never() -> list[Gpu]:
    raise AssertionError("nvidia-smi was asked, though the setting did not need it")


def test_declared_gpus_need_no_nvidia_smi() -> None:
    assert parse_gpus_setting("0:t4,1:t4", never) == [Gpu("0", "t4", "t4"), Gpu("1", "t4", "t4")]
    assert parse_gpus_setting(" 0 : A100-80GB , GPU-ab12:h100 ", never) == [
        Gpu("0", "a100-80gb", "A100-80GB"),
        Gpu("GPU-ab12", "h100", "h100"),
    ]
    assert parse_gpus_setting("none", never) == []
    assert parse_gpus_setting("", never) == []


def test_auto_and_bare_ids_ask_the_machine() -> None:
    machine = parse_nvidia_smi(LISTING)
    assert parse_gpus_setting(None, lambda: machine) == machine
    assert parse_gpus_setting("auto", lambda: machine) == machine
    # a subset, by index or UUID, with the models nvidia-smi gave them
    picked = parse_gpus_setting("1,GPU-0c5e6f2a-aaaa-bbbb-cccc-ddddeeeeffff", lambda: machine)
    assert [(g.id, g.model) for g in picked] == [("1", "t4"), ("2", "a100-80gb")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0:t4,0:t4", "GPU 0 is listed twice"),
        ("0:", "cannot read '0:'"),
        ("t4:2:x,", "cannot read"),
        ("0:t4,,1:t4", "cannot read ''"),
        ("7", "nvidia-smi reports no GPU 7 (it reports: GPU 0 (Tesla T4)"),
    ],
)
def test_bad_settings_say_what_is_wrong(text: str, message: str) -> None:
    machine = parse_nvidia_smi(LISTING)
    with pytest.raises(GpuConfigError, match="^--gpus: ") as error:
        parse_gpus_setting(text, lambda: machine)
    assert message in str(error.value)


def test_the_inventory_from_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, gpus="0:t4,1:t4", placement_timeout=7)
    inventory = GpuInventory.from_settings(settings, never)
    assert [g.id for g in inventory.gpus] == ["0", "1"]
    assert inventory.placement_timeout == 7


def test_what_can_be_placed() -> None:
    inventory = GpuInventory([Gpu("0", "t4"), Gpu("1", "t4"), Gpu("2", "l40s")])
    assert inventory.can_place(CPU)
    assert inventory.can_place(T4) and inventory.can_place(T4_2X) and inventory.can_place(L40S)
    assert not inventory.can_place(Hardware("gpu-t4-4x", "4x T4", 1.0, gpus=4, gpu_model="t4"))
    assert not inventory.can_place(Hardware("gpu-h100", "H100", 1.0, gpus=1, gpu_model="h100"))
    assert GpuInventory().can_place(CPU)
    assert not GpuInventory().can_place(T4)


# --- leases ---------------------------------------------------------------------------------------


async def test_a_cpu_sku_gets_no_gpu_and_sees_none() -> None:
    lease = await t4s(2).acquire(CPU)
    assert lease.gpus == ()
    assert lease.environment() == {"CUDA_VISIBLE_DEVICES": ""}


async def test_instances_never_share_a_gpu() -> None:
    inventory = t4s(3)
    one, two = await inventory.acquire(T4), await inventory.acquire(T4_2X)
    assert [g.id for g in one.gpus] == ["0"]
    assert [g.id for g in two.gpus] == ["1", "2"]
    assert two.environment() == {"CUDA_VISIBLE_DEVICES": "1,2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert inventory.free("t4") == 0
    inventory.release(two)
    assert inventory.free("t4") == 2
    three = await inventory.acquire(T4)
    assert [g.id for g in three.gpus] == ["1"]


async def test_models_are_kept_apart() -> None:
    inventory = GpuInventory([Gpu("0", "t4"), Gpu("1", "l40s")], placement_timeout=0.2)
    t4 = await inventory.acquire(T4)
    l40s = await inventory.acquire(L40S)  # the T4 is held, the L40S is not
    assert (t4.visible_devices, l40s.visible_devices) == ("0", "1")
    with pytest.raises(PlacementFailed):
        await inventory.acquire(T4)


async def test_waiting_says_what_for_once_and_is_served_first_come_first() -> None:
    inventory = t4s(2)
    held = [await inventory.acquire(T4), await inventory.acquire(T4)]
    said: list[list[str]] = [[], [], []]
    waiting = [
        asyncio.create_task(inventory.acquire(T4, said[i].append), name=f"waiter {i}")
        for i in range(3)
    ]
    await asyncio.sleep(0.05)
    assert said[0] == ["waiting for a free T4 GPU: 2 of 2 in use by other instances"]
    behind_one = "; 1 instance waiting before this one"
    assert said[1] == ["waiting for a free T4 GPU: 2 of 2 in use by other instances" + behind_one]
    assert said[2][0].endswith("; 2 instances waiting before this one")
    assert not any(task.done() for task in waiting)

    inventory.release(held[1])
    first = await asyncio.wait_for(waiting[0], 1)
    assert first.visible_devices == "1"
    assert said[0][1].startswith("got GPU 1 (T4) after waiting ")
    await asyncio.sleep(0.05)
    assert not waiting[1].done() and not waiting[2].done()

    inventory.release(held[0])
    second = await asyncio.wait_for(waiting[1], 1)
    assert second.visible_devices == "0"
    inventory.release(first)
    assert (await asyncio.wait_for(waiting[2], 1)).visible_devices == "1"
    assert [len(lines) for lines in said] == [2, 2, 2]  # said once what it waits for, once got


async def test_a_big_request_is_not_overtaken_by_small_ones() -> None:
    inventory = t4s(2)
    one = await inventory.acquire(T4)
    big = asyncio.create_task(inventory.acquire(T4_2X))
    await asyncio.sleep(0.02)
    small = asyncio.create_task(inventory.acquire(T4))  # one T4 is free, but `big` came first
    await asyncio.sleep(0.05)
    assert not small.done() and not big.done()
    inventory.release(one)
    both = await asyncio.wait_for(big, 1)
    assert both.visible_devices == "0,1"
    await asyncio.sleep(0.02)
    assert not small.done()
    inventory.release(both)
    assert (await asyncio.wait_for(small, 1)).visible_devices == "0"


async def test_the_placement_timeout_is_a_clear_failure_and_frees_the_queue() -> None:
    inventory = t4s(1, timeout=0.2)
    held = await inventory.acquire(T4)
    with pytest.raises(PlacementFailed) as failed:
        await inventory.acquire(T4)
    assert str(failed.value) == (
        "gave up after 0.2 s (the placement timeout) waiting for a free T4 GPU: "
        "1 of 1 in use by other instances"
    )
    inventory.release(held)
    assert (await inventory.acquire(T4)).visible_devices == "0"  # nobody left in the queue


async def test_too_few_gpus_fail_at_once() -> None:
    inventory = GpuInventory([Gpu("0", "t4", "Tesla T4")], placement_timeout=60)
    with pytest.raises(PlacementFailed) as failed:
        await asyncio.wait_for(inventory.acquire(T4_2X), 1)
    assert str(failed.value) == (
        "gpu-t4-2x needs 2 T4 GPUs; this machine has 1 (its GPUs: GPU 0 (Tesla T4); "
        "see `modelyard serve --gpus`)"
    )
    with pytest.raises(PlacementFailed, match="gpu-t4 needs 1 T4 GPU; this machine has 0"):
        await GpuInventory().acquire(T4)


async def test_a_canceled_waiter_leaves_the_queue() -> None:
    inventory = t4s(1)
    held = await inventory.acquire(T4)
    gone = asyncio.create_task(inventory.acquire(T4))
    behind = asyncio.create_task(inventory.acquire(T4))
    await asyncio.sleep(0.02)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    inventory.release(held)
    assert (await asyncio.wait_for(behind, 1)).visible_devices == "0"
    assert inventory.free("t4") == 0


async def test_release_is_idempotent_and_never_frees_a_later_holders_gpu() -> None:
    inventory = t4s(1)
    first = await inventory.acquire(T4)
    inventory.release(first)
    second = await inventory.acquire(T4)
    inventory.release(first)  # again: GPU 0 belongs to `second` now
    assert inventory.holders() == {"0": second}
    inventory.release(second)
    assert inventory.holders() == {}
