"""The hardware table: each SKU a model or deployment may choose, what it needs of a machine,
and its price per second. Replicate's SKUs and prices are the defaults; a file overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Hardware:
    """One SKU: `gpus` GPUs of model `gpu_model` (a slug such as `t4`, as `nvidia-smi` names
    it) and, on Ray, the custom `resources` a node must offer (`sku-<sku>: 1` by default)."""

    sku: str
    name: str
    price_per_second: float  # USD
    gpus: int = 0
    gpu_model: str | None = None
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def ray_resources(self) -> dict[str, float]:
        """What a Ray actor of this SKU asks for besides `num_gpus`."""
        return self.resources or {f"sku-{self.sku}": 1.0}


def _gpu(sku: str, name: str, price: float, model: str, count: int = 1) -> Hardware:
    return Hardware(sku, name, price, gpus=count, gpu_model=model)


CPU = Hardware("cpu", "CPU", 0.000100)

# replicate.com/pricing (per second, USD)
DEFAULT_HARDWARE: tuple[Hardware, ...] = (
    CPU,
    _gpu("gpu-t4", "Nvidia T4 GPU", 0.000225, "t4"),
    _gpu("gpu-l40s", "Nvidia L40S GPU", 0.000975, "l40s"),
    _gpu("gpu-l40s-2x", "2x Nvidia L40S GPU", 0.001950, "l40s", 2),
    _gpu("gpu-l40s-4x", "4x Nvidia L40S GPU", 0.003900, "l40s", 4),
    _gpu("gpu-l40s-8x", "8x Nvidia L40S GPU", 0.007800, "l40s", 8),
    _gpu("gpu-a100-large", "Nvidia A100 (80GB) GPU", 0.001400, "a100-80gb"),
    _gpu("gpu-a100-large-2x", "2x Nvidia A100 (80GB) GPU", 0.002800, "a100-80gb", 2),
    _gpu("gpu-a100-large-4x", "4x Nvidia A100 (80GB) GPU", 0.005600, "a100-80gb", 4),
    _gpu("gpu-a100-large-8x", "8x Nvidia A100 (80GB) GPU", 0.011200, "a100-80gb", 8),
    _gpu("gpu-h100", "Nvidia H100 GPU", 0.001525, "h100"),
    _gpu("gpu-h100-2x", "2x Nvidia H100 GPU", 0.003050, "h100", 2),
    _gpu("gpu-h100-4x", "4x Nvidia H100 GPU", 0.006100, "h100", 4),
    _gpu("gpu-h100-8x", "8x Nvidia H100 GPU", 0.012200, "h100", 8),
)


class HardwareTable:
    """The SKUs of this installation, in the order `GET /v1/hardware` lists them."""

    def __init__(self, entries: tuple[Hardware, ...] = DEFAULT_HARDWARE) -> None:
        self.entries = entries
        self._by_sku = {entry.sku: entry for entry in entries}

    def get(self, sku: str) -> Hardware | None:
        return self._by_sku.get(sku)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.entries)
