"""The Ray backend's wiring, without a cluster: what an SKU asks Ray for, and the one-line error
of a server told to use Ray where Ray is not installed (tests/cluster has the real thing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelyard.billing.hardware import CPU, Hardware, HardwareTable
from modelyard.platform import ray_backend
from modelyard.settings import Settings


def test_without_ray_the_backend_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    for name in ("modelyard.engine.ray_backend", "modelyard.engine.ray_actor"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(RuntimeError) as failure:
        ray_backend(Settings(data_dir=tmp_path, backend="ray"))
    assert str(failure.value) == "the Ray backend needs Ray: pip install 'modelyard[ray]'"


def test_what_each_sku_asks_ray_for() -> None:
    pytest.importorskip("ray")
    from modelyard.engine.ray_backend import needs, placement

    table = HardwareTable()
    assert CPU.ray_resources == {}
    assert placement(CPU) == {"num_cpus": 1.0, "num_gpus": 0.0, "resources": {}}
    assert needs(CPU) == {"CPU": 1.0}
    t4, l40s_2x = table.get("gpu-t4"), table.get("gpu-2x-l40s")
    assert t4 is not None and l40s_2x is not None
    assert placement(t4) == {"num_cpus": 0.0, "num_gpus": 1.0, "resources": {"sku-gpu-t4": 1.0}}
    assert needs(l40s_2x) == {"GPU": 2.0, "sku-gpu-2x-l40s": 1.0}
    # The table's own resources replace the SKU's; CPU and GPU there set the counts.
    custom = Hardware("big", "Big", 0.001, 1, "a100-80gb", {"CPU": 8, "accelerator_type:A100": 0.1})
    assert placement(custom) == {
        "num_cpus": 8,
        "num_gpus": 1.0,
        "resources": {"accelerator_type:A100": 0.1},
    }
