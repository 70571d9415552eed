"""Enforcing an instance's `Limits` on its worker, and making its processes die with it.

- Open files and file size: `RLIMIT_NOFILE` and `RLIMIT_FSIZE` (one file no larger than the
  scratch limit), set in the child before it runs bubblewrap; `RLIMIT_NPROC` too, which the kernel
  enforces for every user but root (a server running as root relies on the watcher alone).
- Memory, processes and scratch: a watcher in the server reads `/proc` twice a second (memory:
  the resident set of every process of the worker's tree, summed; processes: their tasks) and
  walks the scratch folder every two seconds; past a limit it kills the worker, and what it was
  running fails with an error naming the limit. cgroups would be exact, but need a delegated
  hierarchy (systemd) that a plain `modelyard serve` does not have.
- The child asks for SIGKILL when the server dies (`PR_SET_PDEATHSIG`); when the worker ends, what
  is left of its process group is killed. In the sandbox, its PID namespace does the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .sandbox import Limits

PR_SET_PDEATHSIG = 1
TICK = 0.5  # seconds between reads of /proc
SCRATCH_EVERY = 4  # ticks between walks of the scratch folder
PAGE = os.sysconf("SC_PAGE_SIZE")


def size(amount: int) -> str:
    """`2 GiB`, `512 MiB`, `100 KiB`, `12 bytes`."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if amount >= scale:
            value = amount / scale
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{amount} bytes"


def child_setup(limits: Limits | None) -> Callable[[], None]:
    """What the child runs before exec: die with the server, and the rlimits of `limits`."""

    def setup() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if limits is None:
            return
        if limits.open_files:
            _lower(resource.RLIMIT_NOFILE, limits.open_files)
        if limits.scratch:
            _lower(resource.RLIMIT_FSIZE, limits.scratch)
        if limits.processes:
            _lower(resource.RLIMIT_NPROC, limits.processes + 64)  # bwrap's own, and slack

    return setup


def _lower(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


@dataclass
class Usage:
    """What a worker's process tree uses now."""

    memory: int  # bytes, resident, summed over its processes
    tasks: int  # processes and threads


def tree_usage(root: int) -> Usage | None:
    """The usage of `root` and every process below it; None when `root` is gone."""
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                text = handle.read()
        except OSError:
            continue
        fields = text[text.rfind(b")") + 2 :].split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        stats[pid] = (int(fields[17]), int(fields[21]))  # num_threads, rss (pages)
    if root not in stats:
        return None
    memory = tasks = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        threads, rss = stats.get(pid, (0, 0))
        tasks += threads
        memory += rss * PAGE
        todo.extend(children.get(pid, ()))
    return Usage(memory, tasks)


def folder_usage(folder: Path) -> int:
    """Bytes of disk the files under `folder` take (links not followed)."""
    total = 0
    todo = [str(folder)]
    while todo:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    todo.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


def exceeded(limits: Limits, usage: Usage | None, scratch_bytes: int | None) -> str | None:
    """The error for the first limit `usage` is past, or None."""
    owner = limits.owner
    if usage is not None and limits.memory and usage.memory > limits.memory:
        return f"Prediction used more than {size(limits.memory)} of memory (the limit of {owner})"
    if usage is not None and limits.processes and usage.tasks > limits.processes:
        return (
            f"Prediction ran more than {limits.processes} processes and threads "
            f"(the limit of {owner})"
        )
    if scratch_bytes is not None and limits.scratch and scratch_bytes > limits.scratch:
        return (
            f"Prediction wrote more than {size(limits.scratch)} to /tmp and its home folder "
            f"(the limit of {owner})"
        )
    return None


async def guard(
    process: asyncio.subprocess.Process,
    limits: Limits | None,
    scratch: Path | None,
    kill: Callable[[str], object],
) -> None:
    """Watch `process` against `limits` until it ends (calling `kill` with the reason when it
    passes one), then kill what is left of its process group."""
    pid = process.pid
    ticks = 0
    watching = limits is not None and any(
        (limits.memory, limits.processes, scratch is not None and limits.scratch)
    )
    try:
        while process.returncode is None:
            if not watching:
                await process.wait()
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), TICK)
                break
            assert limits is not None
            ticks += 1
            walk = scratch is not None and bool(limits.scratch) and ticks % SCRATCH_EVERY == 0
            usage, used = await asyncio.to_thread(_measure, pid, scratch if walk else None)
            reason = exceeded(limits, usage, used)
            if reason is not None:
                kill(reason)
                await process.wait()
                break
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # what the worker started and left behind


def _measure(pid: int, scratch: Path | None) -> tuple[Usage | None, int | None]:
    return tree_usage(pid), folder_usage(scratch) if scratch is not None else None
