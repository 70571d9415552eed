"""What a running prediction reports, in order: Started, then Log/Output/Metric, then Done."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard_worker.protocol import LogSource, MetricMode, Status

__all__ = [
    "Done", "Event", "Log", "Metric", "Output", "OutputFile", "Started", "Status", "all_scalars",
]  # fmt: skip

_SCALARS = frozenset({str, int, float, bool, type(None)})


def all_scalars(items: list[Any]) -> bool:
    """Whether `items` holds JSON scalars only, so no file: walks over an output skip such a
    list in one pass (an embedding is hundreds of floats; a call per item cost milliseconds)."""
    return all(type(item) in _SCALARS for item in items)


@dataclass(frozen=True, slots=True)
class OutputFile:
    """A file the model produced; it sits on local disk until a consumer takes it."""

    path: Path


@dataclass(frozen=True, slots=True)
class Started:
    at: float


@dataclass(frozen=True, slots=True)
class Log:
    text: str
    source: LogSource = "stdout"


@dataclass(frozen=True, slots=True)
class Output:
    """One item yielded by an iterator output (non-iterator outputs arrive in Done)."""

    index: int
    value: Any


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    value: Any
    mode: MetricMode = "replace"


@dataclass(frozen=True, slots=True)
class Done:
    status: Status
    output: Any = None
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    predict_time: float | None = None
    is_stream: bool = False


Event = Started | Log | Output | Metric | Done
