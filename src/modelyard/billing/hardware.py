"""The hardware table: each SKU a model or deployment may choose, what it needs of a machine,
and its price per second. Replicate's SKUs and prices are the defaults; a YAML file
(`modelyard serve --hardware-file`, docs/hardware.md) changes, adds or drops entries.

Which of these SKUs an installation can actually run is the backend's answer
(`Backend.can_place`), not the table's: the table is what exists and what it costs.

Each SKU also says what one instance of it may use (`limits`: memory, processes, open files,
scratch space, output size); the runtime enforces them (runtime/limits.py, docs/security.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

GIB = 1 << 30
UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt]?)(?:i?b)?)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    """What one instance of a SKU may use; None: no limit. Sizes in bytes."""

    memory: int | None = 16 * GIB  # resident memory of the worker's processes together
    processes: int | None = 4096  # processes and threads together
    open_files: int | None = 65536  # per process
    scratch: int | None = 16 * GIB  # its /tmp and home folder together (and /dev/shm's size)
    output: int | None = 4 * GIB  # output files of one prediction


LIMIT_FIELDS = ("memory", "processes", "open_files", "scratch", "output")
SIZE_LIMITS = ("memory", "scratch", "output")


def parse_size(value: object) -> int:
    """Bytes from `512 MiB`, `2G`, `1.5GiB` or a whole number (binary units: G = GiB)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"must be 0 or more, got {value}")
        return value
    match = SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"must be a size such as 512MiB or 8GiB, got {value!r}")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


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
    limits: Limits = field(default_factory=Limits)

    @property
    def ray_resources(self) -> dict[str, float]:
        """What a Ray actor of this SKU asks for besides its CPU or GPUs (engine/ray_backend.py):
        the table's `resources`, else `sku-<sku>: 1`; nothing for `cpu`, which runs on the CPUs
        of any node."""
        if self.resources:
            return dict(self.resources)
        return {} if self.sku == "cpu" else {f"sku-{self.sku}": 1.0}


def _gpu(sku: str, name: str, price: float, model: str, count: int = 1) -> Hardware:
    return Hardware(sku, name, price, gpus=count, gpu_model=model)


CPU = Hardware("cpu", "CPU", 0.000100)

# replicate.com/pricing, checked 2026 (USD per second). The names are those Replicate's
# `GET /v1/hardware` answers with; the multi-GPU L40S SKUs really are `gpu-2x-l40s` (count
# first), unlike the A40, A100 and H100 ones (`-2x` last).
DEFAULT_HARDWARE: tuple[Hardware, ...] = (
    CPU,
    _gpu("gpu-t4", "Nvidia T4 GPU", 0.000225, "t4"),
    _gpu("gpu-a40-small", "Nvidia A40 GPU", 0.000575, "a40"),
    _gpu("gpu-a40-large", "Nvidia A40 (Large) GPU", 0.000725, "a40"),
    _gpu("gpu-a40-large-2x", "2x Nvidia A40 (Large) GPU", 0.001450, "a40", 2),
    _gpu("gpu-a40-large-4x", "4x Nvidia A40 (Large) GPU", 0.002900, "a40", 4),
    _gpu("gpu-a40-large-8x", "8x Nvidia A40 (Large) GPU", 0.005800, "a40", 8),
    _gpu("gpu-l40s", "Nvidia L40S GPU", 0.000975, "l40s"),
    _gpu("gpu-2x-l40s", "2x Nvidia L40S GPU", 0.001950, "l40s", 2),
    _gpu("gpu-4x-l40s", "4x Nvidia L40S GPU", 0.003900, "l40s", 4),
    _gpu("gpu-8x-l40s", "8x Nvidia L40S GPU", 0.007800, "l40s", 8),
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

    def __contains__(self, sku: object) -> bool:
        return sku in self._by_sku

    def __iter__(self) -> Iterator[Hardware]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


# --- the override file ----------------------------------------------------------------------


class HardwareFileError(ValueError):
    """The hardware file cannot be used; the message is one line naming the file, the line,
    the entry and the field (`hardware.yaml:7: hardware.gpu-t4.price_per_second: ...`)."""


#: A SKU is stored in 50-character columns (models, releases, usage) and names a Ray resource
#: (`sku-<sku>`), so it stays a plain lowercase slug.
SKU = re.compile(r"[a-z0-9][a-z0-9._-]{0,49}")
GPU_MODEL = re.compile(r"[a-z0-9][a-z0-9._-]*")
FIELDS = ("name", "price_per_second", "gpus", "gpu_model", "resources", "limits", "enabled")
TOP_LEVEL = ("hardware",)


def load_hardware(path: Path | None) -> HardwareTable:
    """The default table changed by the file at `path` (None: the defaults as they are).

    The file holds `hardware:`, a mapping from SKU to fields. A default SKU's entry changes only
    the fields it gives; a new SKU needs `name` and `price_per_second`; `enabled: false` drops a
    SKU (except `cpu`, which models run on unless told otherwise). New SKUs follow the defaults
    in the file's order. Raises `HardwareFileError`.
    """
    if path is None:
        return HardwareTable()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HardwareFileError(f"{path}: cannot read the hardware file: {exc}") from None
    return _Reader(str(path)).table(text)


class _Reader:
    """Reads the composed YAML node tree (which keeps line numbers) of one hardware file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, node: yaml.Node | None, where: str, problem: str) -> HardwareFileError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return HardwareFileError(f"{self.path}{line}: {where}: {problem}")

    def table(self, text: str) -> HardwareTable:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise HardwareFileError(f"{self.path}{line}: not valid YAML: {problem}") from None
        if root is None:  # an empty file changes nothing
            return HardwareTable()
        top = self.mapping(root, "", TOP_LEVEL)
        if "hardware" not in top:
            return HardwareTable()
        node = top["hardware"][1]
        if _is_null(node):
            return HardwareTable()
        entries = {entry.sku: entry for entry in DEFAULT_HARDWARE}
        for sku, (sku_node, fields_node) in self.mapping(node, "hardware").items():
            where = f"hardware.{sku}"
            if not SKU.fullmatch(sku):
                raise self.error(
                    sku_node,
                    where,
                    "a SKU is 1 to 50 lowercase letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit",
                )
            fields = self.mapping(fields_node, where, FIELDS) if not _is_null(fields_node) else {}
            values = {
                name: self.field(sku, name, *found)
                for name, found in fields.items()
                if name != "limits"
            }
            if "limits" in fields:
                base = entries[sku].limits if sku in entries else Limits()
                values["limits"] = self.limits(f"{where}.limits", fields["limits"][1], base)
            if values.pop("enabled", True) is False:
                if sku == CPU.sku:
                    raise self.error(
                        fields["enabled"][0],
                        f"{where}.enabled",
                        "cpu cannot be disabled: models run on it unless told otherwise",
                    )
                entries.pop(sku, None)  # dropping a SKU nobody defined is harmless
                continue
            entries[sku] = self.entry(sku, sku_node, entries.get(sku), values)
        return HardwareTable(tuple(entries.values()))

    def entry(
        self, sku: str, node: yaml.Node, default: Hardware | None, values: dict[str, Any]
    ) -> Hardware:
        """A default changed by `values`, or a new SKU made of them; checked as a whole."""
        where = f"hardware.{sku}"
        if default is None:
            for required in ("name", "price_per_second"):
                if required not in values:
                    raise self.error(
                        node, f"{where}.{required}", "required for a SKU that is not a default"
                    )
            entry = Hardware(sku, **values)
        else:
            entry = replace(default, **values)
        if entry.gpus > 0 and entry.gpu_model is None:
            raise self.error(
                node, f"{where}.gpu_model", f"required when gpus is {entry.gpus} (e.g. t4, h100)"
            )
        if entry.gpus == 0 and entry.gpu_model is not None:
            raise self.error(
                node,
                f"{where}.gpu_model",
                f"is {entry.gpu_model!r} but gpus is 0; set gpus, or gpu_model: null",
            )
        if sku == CPU.sku and entry.gpus != 0:
            raise self.error(
                node, f"{where}.gpus", "must be 0 for cpu: models run on it by default"
            )
        return entry

    def field(self, sku: str, name: str, key: yaml.Node, node: yaml.Node) -> Any:
        """One field's value, checked against what that field may hold."""
        where = f"hardware.{sku}.{name}"
        value = self.scalar(node, where) if name != "resources" else None
        if name == "name":
            if not isinstance(value, str) or not value.strip():
                raise self.error(node, where, f"must be a non-empty string, got {value!r}")
            return value.strip()
        if name == "price_per_second":
            return self.number(node, where, value)
        if name == "gpus":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise self.error(node, where, f"must be a whole number, 0 or more, got {value!r}")
            return value
        if name == "gpu_model":
            if value is None:
                return None
            if not isinstance(value, str) or not GPU_MODEL.fullmatch(value):
                raise self.error(
                    node, where, f"must be a lowercase slug such as t4 or a100-80gb, got {value!r}"
                )
            return value
        if name == "enabled":
            if not isinstance(value, bool):
                raise self.error(node, where, f"must be true or false, got {value!r}")
            return value
        resources: dict[str, float] = {}
        if _is_null(node):
            return resources
        for resource, (_, amount) in self.mapping(node, where).items():
            resources[resource] = self.number(
                amount, f"{where}.{resource}", self.scalar(amount, f"{where}.{resource}")
            )
        return resources

    def limits(self, where: str, node: yaml.Node, base: Limits) -> Limits:
        """`base` changed by the limits given (null: no limit)."""
        if _is_null(node):
            return base
        changes: dict[str, int | None] = {}
        for name, (_, value_node) in self.mapping(node, where, LIMIT_FIELDS).items():
            value = self.scalar(value_node, f"{where}.{name}")
            if value is None:
                changes[name] = None
                continue
            try:
                if name in SIZE_LIMITS:
                    amount = parse_size(value)
                elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"must be a whole number, 1 or more, got {value!r}")
                else:
                    amount = value
            except ValueError as exc:
                raise self.error(value_node, f"{where}.{name}", str(exc)) from None
            if amount < 1:
                raise self.error(value_node, f"{where}.{name}", "must be more than 0 (or null)")
            changes[name] = amount
        return replace(base, **changes)

    def number(self, node: yaml.Node, where: str, value: Any) -> float:
        """A finite number, 0 or more. YAML 1.1 reads `2.25e-4` (no dot) as a string, so a
        string that Python reads as a number is taken too."""
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise self.error(node, where, f"must be a number, 0 or more, got {value!r}")
        return float(value)

    def scalar(self, node: yaml.Node, where: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, where, "must be a single value, not a list or a mapping")
        return yaml.SafeLoader("").construct_object(node)

    def mapping(
        self, node: yaml.Node, where: str, allowed: tuple[str, ...] | None = None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """Key -> (key node, value node) of the mapping at `where` ("" for the top level); keys
        appear once each and, with `allowed`, are among them. A key is taken as text, so a SKU
        that YAML would read as a number is still a name."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, where or "the file", "must be a mapping (key: value lines)")
        found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or not key_node.value:
                raise self.error(key_node, where or "the file", "a key must be a plain name")
            key = str(key_node.value)
            path = f"{where}.{key}" if where else key
            if key in found:
                raise self.error(key_node, path, "appears twice")
            if allowed is not None and key not in allowed:
                kind = "field" if where else "key"
                raise self.error(
                    key_node, path, f"unknown {kind}; expected one of {', '.join(allowed)}"
                )
            found[key] = (key_node, value_node)
        return found


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"
