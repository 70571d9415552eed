"""One worker process as the runner starts it: its variables, its sandbox command line, what
its exit status means, the files its messages name."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelyard_worker import protocol

from . import sandbox
from .events import OutputFile, all_scalars
from .runnerspec import RunnerSpec
from .workerpath import worker_pythonpath

#: bwrap's own exit status for a worker killed by a signal N: 128 + N, as a shell reports it.
SIGNALED_IN_SANDBOX = 128


def worker_environment(spec: RunnerSpec) -> dict[str, str]:
    """The worker's variables: in a sandbox, none of the server's secrets."""
    if spec.sandbox is not None:
        env = sandbox.environment(os.environ)
    else:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
        }
    env.update(spec.environment)
    bin_dir = str(Path(spec.python).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(Path(bin_dir).parent)
    env["PYTHONPATH"] = str(worker_pythonpath())
    env["PYTHONUNBUFFERED"] = "1"
    if spec.weights is not None:
        env["COG_WEIGHTS"] = spec.weights
    return env


def sandbox_prefix(spec: RunnerSpec, env: Mapping[str, str]) -> list[str]:
    """The `bwrap ... --` that runs the worker in its sandbox (runtime/sandbox.py)."""
    assert spec.sandbox is not None
    return sandbox.command(
        spec.sandbox,
        python=Path(spec.python),
        package_dir=Path(spec.package_dir),
        worker_paths=sandbox.worker_package_paths(worker_pythonpath()),
        limits=spec.limits,
        environment=env,
    )


def describe_exit(returncode: int | None, sandboxed: bool = False) -> str:
    """A sentence for how a worker process ended (in a sandbox, bwrap reports a signal N that
    ended the worker as the exit code 128 + N)."""
    if returncode is None:
        return "it closed its connection"
    if sandboxed and SIGNALED_IN_SANDBOX < returncode < SIGNALED_IN_SANDBOX + 65:
        returncode = SIGNALED_IN_SANDBOX - returncode
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        hint = {
            "SIGKILL": " (the system may have run out of memory)",
            "SIGSEGV": " (segmentation fault)",
            "SIGABRT": " (aborted)",
        }.get(name, "")
        return f"killed by {name}{hint}"
    if returncode == protocol.EXIT_PROTOCOL_ERROR:
        return f"exited with code {returncode} (it received a message it could not accept)"
    return f"exited with code {returncode}"


def decode_files(value: Any) -> Any:
    """Turn the worker's file references into OutputFile objects."""
    if isinstance(value, dict):
        if len(value) == 1 and protocol.FILE_KEY in value:
            return OutputFile(Path(value[protocol.FILE_KEY]))
        return {k: decode_files(v) for k, v in value.items()}
    if isinstance(value, list):
        return value if all_scalars(value) else [decode_files(v) for v in value]
    return value
