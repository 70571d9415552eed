"""The hardware table: Replicate's SKUs as defaults, the YAML file that changes them, and the one
line a malformed file gets (from `load_hardware` and from `modelyard serve --hardware-file`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelyard.billing.hardware import (
    CPU,
    DEFAULT_HARDWARE,
    Hardware,
    HardwareFileError,
    HardwareTable,
    load_hardware,
)
from modelyard.cli.main import app

#: The GPU model slugs the local backend maps `nvidia-smi` names to (engine/gpus.py).
GPU_MODELS = {"t4", "a40", "l40s", "a100-80gb", "h100"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hardware.yaml"
    path.write_text(text)
    return path


# --- the defaults ---------------------------------------------------------------------------


def test_the_defaults_are_replicates_skus_and_prices() -> None:
    table = load_hardware(None)
    assert table.entries == DEFAULT_HARDWARE
    assert table.entries[0] == CPU == Hardware("cpu", "CPU", 0.0001)
    skus = [entry.sku for entry in table]
    assert len(skus) == len(set(skus)) == len(table)
    # replicate.com/pricing: a few prices and Replicate's own spelling of the multi-GPU SKUs
    assert table.get("gpu-t4") == Hardware("gpu-t4", "Nvidia T4 GPU", 0.000225, 1, "t4")
    assert table.get("gpu-a40-small") == Hardware(
        "gpu-a40-small", "Nvidia A40 GPU", 0.000575, 1, "a40"
    )
    assert table.get("gpu-2x-l40s") == Hardware(
        "gpu-2x-l40s", "2x Nvidia L40S GPU", 0.00195, 2, "l40s"
    )
    assert table.get("gpu-l40s-2x") is None  # not a Replicate SKU
    assert table.get("gpu-a100-large-8x") == Hardware(
        "gpu-a100-large-8x", "8x Nvidia A100 (80GB) GPU", 0.0112, 8, "a100-80gb"
    )
    assert table.get("gpu-h100") == Hardware("gpu-h100", "Nvidia H100 GPU", 0.001525, 1, "h100")
    assert "gpu-h100-8x" in table and "gpu-none" not in table


def test_every_gpu_sku_says_how_many_gpus_of_which_model() -> None:
    for entry in DEFAULT_HARDWARE:
        if entry.sku == "cpu":
            assert (entry.gpus, entry.gpu_model) == (0, None)
            continue
        assert entry.gpu_model in GPU_MODELS, entry
        count = re.search(r"(\d)x", entry.sku)
        assert entry.gpus == (int(count.group(1)) if count else 1), entry
        assert entry.name.startswith(f"{entry.gpus}x ") == (entry.gpus > 1), entry
        assert entry.ray_resources == {f"sku-{entry.sku}": 1.0}


# --- the override file ----------------------------------------------------------------------


def test_a_file_changes_adds_and_drops_skus(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
# prices of our own, one GPU of our own, no 8x H100
hardware:
  gpu-t4:
    price_per_second: 0.0002
  gpu-h100-8x:
    enabled: false
  gpu-rtx-4090:
    name: Nvidia RTX 4090 GPU
    price_per_second: 3e-4            # YAML 1.1 reads this as a string; still a number here
    gpus: 1
    gpu_model: rtx-4090
    resources: {sku-gpu-rtx-4090: 1, memory: 2.5e10}
  gpu-l40s:
    resources: {l40s-node: 1}
  gpu-none-such:
    enabled: false                    # dropping what does not exist is harmless
""",
    )
    table = load_hardware(path)
    skus = [entry.sku for entry in table]
    default_skus = [entry.sku for entry in DEFAULT_HARDWARE]
    assert skus == [sku for sku in default_skus if sku != "gpu-h100-8x"] + ["gpu-rtx-4090"]
    assert table.get("gpu-t4") == Hardware("gpu-t4", "Nvidia T4 GPU", 0.0002, 1, "t4")
    assert table.get("gpu-rtx-4090") == Hardware(
        "gpu-rtx-4090",
        "Nvidia RTX 4090 GPU",
        0.0003,
        1,
        "rtx-4090",
        {"sku-gpu-rtx-4090": 1.0, "memory": 2.5e10},
    )
    l40s = table.get("gpu-l40s")
    assert l40s is not None and l40s.ray_resources == {"l40s-node": 1.0}
    assert l40s.price_per_second == 0.000975  # the fields not given keep their defaults


def test_a_default_can_become_a_cpu_sku_and_a_cpu_sku_can_be_added(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "hardware:\n"
        "  gpu-t4: {gpus: 0, gpu_model: null, name: Small CPU}\n"
        "  cpu-large: {name: Large CPU, price_per_second: 0.0004}\n"
        "  cpu: {price_per_second: 0}\n",
    )
    table = load_hardware(path)
    assert table.get("gpu-t4") == Hardware("gpu-t4", "Small CPU", 0.000225)
    assert table.get("cpu-large") == Hardware("cpu-large", "Large CPU", 0.0004)
    assert table.get("cpu") == Hardware("cpu", "CPU", 0.0)


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "hardware:\n", "hardware: {}\n"])
def test_a_file_without_entries_keeps_the_defaults(tmp_path: Path, text: str) -> None:
    assert load_hardware(write(tmp_path, text)).entries == DEFAULT_HARDWARE


def test_the_default_table_is_a_table() -> None:
    table = HardwareTable()
    assert list(table) == list(DEFAULT_HARDWARE) and table.get("cpu") is CPU


# --- malformed files: one line, naming the file, the line, the entry and the field ----------

BAD = [
    ("- gpu-t4\n", 1, "the file: must be a mapping"),
    ("hardware: [gpu-t4]\n", 1, "hardware: must be a mapping"),
    ("gpus:\n  gpu-t4: {}\n", 1, "gpus: unknown key; expected one of hardware"),
    ("hardware:\n  gpu-t4: {price: 1}\n", 2, "hardware.gpu-t4.price: unknown field"),
    (
        "hardware:\n  gpu-t4:\n    price_per_second: cheap\n",
        3,
        "hardware.gpu-t4.price_per_second: must be a number, 0 or more, got 'cheap'",
    ),
    (
        "hardware:\n  gpu-t4:\n    price_per_second: -1\n",
        3,
        "hardware.gpu-t4.price_per_second: must be a number, 0 or more",
    ),
    ("hardware:\n  gpu-t4: {price_per_second: .inf}\n", 2, "price_per_second: must be a number"),
    ("hardware:\n  gpu-t4: {price_per_second: true}\n", 2, "price_per_second: must be a number"),
    ("hardware:\n  gpu-t4: {gpus: 1.5}\n", 2, "hardware.gpu-t4.gpus: must be a whole number"),
    ("hardware:\n  gpu-t4: {gpus: yes}\n", 2, "hardware.gpu-t4.gpus: must be a whole number"),
    ("hardware:\n  gpu-t4: {gpus: 0}\n", 2, "hardware.gpu-t4.gpu_model: is 't4' but gpus is 0"),
    ("hardware:\n  gpu-t4: {gpu_model: T4}\n", 2, "hardware.gpu-t4.gpu_model: must be a lowercase"),
    ("hardware:\n  gpu-t4: {name: ''}\n", 2, "hardware.gpu-t4.name: must be a non-empty string"),
    ("hardware:\n  gpu-t4: {name: [a]}\n", 2, "hardware.gpu-t4.name: must be a single value"),
    ("hardware:\n  gpu-t4: {enabled: no-thanks}\n", 2, "hardware.gpu-t4.enabled: must be true"),
    ("hardware:\n  gpu-t4: {resources: [a]}\n", 2, "hardware.gpu-t4.resources: must be a mapping"),
    (
        "hardware:\n  gpu-t4:\n    resources:\n      node: lots\n",
        4,
        "hardware.gpu-t4.resources.node: must be a number",
    ),
    ("hardware:\n  gpu-t4: [1]\n", 2, "hardware.gpu-t4: must be a mapping"),
    ("hardware:\n  gpu-t4: {}\n  gpu-t4: {}\n", 3, "hardware.gpu-t4: appears twice"),
    ("hardware:\n  GPU-T4: {}\n", 2, "hardware.GPU-T4: a SKU is 1 to 50 lowercase letters"),
    (f"hardware:\n  {'g' * 51}: {{}}\n", 2, "a SKU is 1 to 50 lowercase letters"),
    (
        "hardware:\n  gpu-new:\n    name: New\n",
        2,
        "hardware.gpu-new.price_per_second: required for a SKU that is not a default",
    ),
    (
        "hardware:\n  gpu-new: {price_per_second: 1}\n",
        2,
        "hardware.gpu-new.name: required for a SKU that is not a default",
    ),
    (
        "hardware:\n  gpu-new: {name: New, price_per_second: 1, gpus: 2}\n",
        2,
        "hardware.gpu-new.gpu_model: required when gpus is 2",
    ),
    ("hardware:\n  cpu: {enabled: false}\n", 2, "hardware.cpu.enabled: cpu cannot be disabled"),
    ("hardware:\n  cpu: {gpus: 1, gpu_model: t4}\n", 2, "hardware.cpu.gpus: must be 0 for cpu"),
    ("hardware:\n  gpu-t4: {price_per_second: 1\n", 3, "not valid YAML"),
    ("hardware:\n\tgpu-t4: {}\n", 2, "not valid YAML"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD)
def test_a_malformed_file_is_one_line_naming_file_entry_and_field(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(HardwareFileError) as raised:
        load_hardware(path)
    error = str(raised.value)
    assert "\n" not in error
    assert error.startswith(f"{path}:{line}: "), error
    assert message in error


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(HardwareFileError, match=r"missing\.yaml: cannot read the hardware file"):
        load_hardware(tmp_path / "missing.yaml")
    assert issubclass(HardwareFileError, ValueError)


def test_serve_with_a_bad_hardware_file_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, "hardware:\n  gpu-t4:\n    price_per_second: cheap\n")
    data = tmp_path / "data"
    result = CliRunner().invoke(
        app, ["serve", "--data-dir", str(data), "--hardware-file", str(path), "--no-catalog"]
    )
    assert result.exit_code == 1, result.output
    assert result.stdout == ""  # no token printed: nothing was created
    expected = f"Error: {path}:3: hardware.gpu-t4.price_per_second: must be a number, 0 or more"
    assert result.stderr.splitlines() == [f"{expected}, got 'cheap'"]
    assert not data.exists()
