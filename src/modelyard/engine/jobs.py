"""A Job: where one queued or running prediction is, in the one map the engine keeps.

Cancel and deadlines act on the Job; nothing else tracks where a prediction is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from modelyard.runtime.runner import Mode

if TYPE_CHECKING:
    from .backend import Instance


class JobState(StrEnum):
    QUEUED = "queued"  # in its pool's queue
    BOOTING = "booting"  # an instance is starting for it
    RUNNING = "running"  # sent to an instance
    FINISHING = "finishing"  # done on the instance; its outputs are being stored


@dataclass(frozen=True)
class PoolKey:
    """The pool a job runs in: a version in one mode, or a deployment's."""

    version_pk: int
    mode: Mode
    deployment_id: int | None = None


@dataclass(eq=False)
class Job:
    """One prediction (or training) this process is responsible for until it ends."""

    prediction_id: str
    key: PoolKey
    # The input as validated (defaults applied) when it was created here; None after a restart,
    # when it is validated again against the same stored schema before it runs.
    inputs: dict[str, Any] | None = None
    state: JobState = JobState.QUEUED
    instance: Instance | None = None
    deadline: asyncio.TimerHandle | None = None
    cancel_requested: bool = False
