"""What a runner is asked to start (`RunnerSpec`) and what it reports: its state, its setup,
its health."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

from modelyard_worker import protocol
from modelyard_worker.protocol import Mode

from .sandbox import Limits, SandboxSpec


class RunnerState(StrEnum):
    """Cog's health statuses, which are also the runner's states. A `StrEnum`: each equals
    (and serializes as) its name, so comparisons with plain strings keep working."""

    STARTING = "STARTING"  # the worker is starting or running setup()
    READY = "READY"  # a slot is free
    BUSY = "BUSY"  # every slot is taken
    SETUP_FAILED = "SETUP_FAILED"  # setup() failed; the next prediction tries again
    DEFUNCT = "DEFUNCT"  # the worker died; the next prediction starts a new one
    UNHEALTHY = "UNHEALTHY"  # only in a Health: the user's healthcheck() said no
    STOPPED = "STOPPED"  # not started, or stopped


#: The states in which the worker takes predictions.
LIVE = (RunnerState.READY, RunnerState.BUSY)

#: How the worker answers the start: `ready`, or `setup_failed` (also made up when it dies).
SetupReply = protocol.ReadyMessage | protocol.SetupFailedMessage


@dataclass(frozen=True)
class RunnerSpec:
    """How to start one worker: which interpreter, which package, which predictor."""

    package_dir: Path
    python: Path
    ref: str
    mode: Mode = "predict"
    environment: Mapping[str, str] = field(default_factory=dict)
    max_concurrency: int | None = None
    weights: str | None = None
    setup_timeout: float | None = None
    # The sandbox it runs in (None: none) and what it may use (None: no limits); runtime/sandbox.py
    sandbox: SandboxSpec | None = None
    limits: Limits | None = None


@dataclass
class SetupResult:
    status: Literal["succeeded", "failed"]
    logs: str
    error: str | None
    started_at: float
    completed_at: float


@dataclass(frozen=True)
class Health:
    """Cog's health status (`Health("READY")` works too) and, when unhealthy or failed, why."""

    status: RunnerState
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", RunnerState(self.status))


class SetupFailed(Exception):
    """`setup()` raised, timed out, or the worker could not start."""
