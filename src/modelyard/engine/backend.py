"""The seam between the engine and the machines: a Backend makes Instances of a version.

An Instance is one worker of one version, somewhere: on this machine (`LocalBackend`) or, later,
in an actor on another machine. The engine knows only this interface, and builds an instance
from plain values (`InstanceSpec`), so an instance can live in another process: nothing of the
engine crosses the seam, only the spec, inputs (JSON with file URLs) and events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from modelyard.billing.hardware import CPU, Hardware
from modelyard.cogspec.inputs import file_fields, input_component
from modelyard.runtime.events import Event
from modelyard.runtime.runner import Health, Mode

Progress = Callable[[str], None]


@dataclass(frozen=True)
class InstanceSpec:
    """What an instance runs: a version's package, weights and stored schema, in one mode."""

    version_id: str
    package_key: str  # the package archive's blob key (where another machine fetches it)
    package_dir: Path  # the package unpacked on this machine
    mode: Mode
    schema: dict[str, Any]  # the version's stored OpenAPI schema: never re-derived
    weights_key: str | None = None  # the weights' blob key (where another machine fetches them)
    weights: str | None = None  # a local path to hand setup(weights=...); else from weights_key
    setup_timeout: float | None = None
    hardware: Hardware = CPU  # the SKU its model or deployment runs on
    idle_timeout: float = 300.0  # seconds an idle instance lives (scale to zero)
    # Whose pool: `model` (the version's own) or `deployment-<id>`. Instances of the same pool
    # on several replicas are the same Ray actors (ray_backend.py names them by it).
    pool: str = "model"

    @property
    def component(self) -> str:
        """The schema component its inputs are validated against."""
        return input_component(self.mode)

    @cached_property
    def file_fields(self) -> dict[str, bool]:
        """Inputs that hold files -> whether each is a list (derived once per spec)."""
        return file_fields(self.schema, self.component)


class BootFailed(Exception):
    """The instance could not start: its environment, its worker or `setup()` failed."""


class InstanceLost(Exception):
    """Raised by `Instance.predict` before it yields Started: the instance (its machine) is
    gone and the prediction never ran there, so the pool runs it again, first in line, on
    another instance. Once Started was yielded, a lost machine ends the prediction `failed`."""


class Instance(Protocol):
    """One worker of one version."""

    spec: InstanceSpec  # what it runs, and on which hardware

    async def start(self, progress: Progress) -> int:
        """Build or reuse the environment, start the worker and run `setup()`, reporting build
        and setup output to `progress`; returns the slots the worker reported (predictions it
        runs at once). Raises `BootFailed` with the reason."""
        ...

    def predict(
        self, inputs: dict[str, Any], prediction_id: str, context: dict[str, str] | None = None
    ) -> AsyncIterator[Event]:
        """Run one prediction on validated `inputs`: Started, then Log/Output/Metric, then Done
        (Done also when it could not run). `context` is the request's context the worker's
        `current_scope().context` shows (the caller's traceparent/tracestate)."""
        ...

    async def cancel(self, prediction_id: str) -> bool:
        """Ask the worker to cancel a prediction; False when it does not run here."""
        ...

    async def stop(self) -> None:
        """Stop the worker (a running prediction ends first, briefly) and free what it held."""
        ...

    async def health(self) -> Health:
        """Cog's health status of the worker, running the user's `healthcheck()` when it is
        live (bounded by Cog's 5 s): READY or BUSY when healthy, UNHEALTHY with why, or the
        state it is in (STARTING, DEFUNCT...)."""
        ...

    @property
    def lost(self) -> bool:
        """True once the machine it ran on is gone: the pool replaces it."""
        ...


class Backend(Protocol):
    """Makes instances; the engine asks it for one per boot."""

    def instance(self, spec: InstanceSpec) -> Instance: ...

    def can_place(self, hardware: Hardware) -> bool:
        """Whether this backend has (or its cluster has) machines for the SKU at all."""
        ...

    async def close(self) -> None: ...
