"""The files a sandboxed worker hands back, taken out of its reach; the output size limit.

A worker names its output files by the paths it sees. Read as they are on the server, they could
name any file of the server (`/srv/data/secret.key`), or a link to one. So a file in the worker's
`/tmp` or `$HOME` is moved, through folders opened without following links, into the instance's
`outputs/` folder, which the worker cannot see, and must be a plain file once there; a file in the
model's package or inbox (read-only to the worker) must resolve inside it; any other path fails
the prediction. The moved files' sizes count against the output limit of one prediction.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from .events import Done, Event, Output, OutputFile, all_scalars
from .limits import size
from .sandbox import HOME_INSIDE, TMP_INSIDE, Limits, SandboxSpec


class OutputRefused(Exception):
    """An output file that cannot be handed on; the message is the prediction's error."""


class _Claims:
    """One prediction's output files: where each is now, and their size so far."""

    def __init__(self, spec: SandboxSpec | None, package_dir: Path, limits: Limits | None):
        self.spec = spec
        self.package_dir = Path(os.path.realpath(package_dir))
        self.limits = limits
        self.moved: dict[Path, Path] = {}
        self.total = 0

    def value(self, value: Any) -> Any:
        if isinstance(value, OutputFile):
            return OutputFile(self.file(value.path))
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    def file(self, path: Path) -> Path:
        if path in self.moved:
            return self.moved[path]
        here = self._claim(path) if self.spec is not None else path
        self.moved[path] = here
        if self.limits is not None and self.limits.output:
            try:
                self.total += os.stat(here).st_size
            except OSError:
                pass
            if self.total > self.limits.output:
                raise OutputRefused(
                    f"Prediction's output files are larger than {size(self.limits.output)} "
                    f"(the limit of {self.limits.owner})"
                )
        return here

    def _claim(self, path: Path) -> Path:
        assert self.spec is not None
        text = str(path)
        # The package and the inbox first: they may be shown inside /tmp (a package under /tmp).
        for shown in (self.package_dir, Path(os.path.realpath(self.spec.inbox))):
            if path.is_relative_to(shown):
                real = Path(os.path.realpath(path))
                if real.is_relative_to(shown) and real.is_file():
                    return real
        for mount, folder in ((TMP_INSIDE, "tmp"), (HOME_INSIDE, "home")):
            if text.startswith(mount + "/"):
                return _move(self.spec.scratch / folder, text[len(mount) + 1 :], self.spec)
        raise OutputRefused(
            f"The output file {text} is not in /tmp, the home folder or the model's package: "
            "a sandboxed model returns files it wrote there"
        )


def _move(base: Path, relative: str, spec: SandboxSpec) -> Path:
    """Move `base/relative` into `spec.outputs`, following no link on the way."""
    parts = relative.split("/")
    if not parts[-1] or any(part in ("", ".", "..") for part in parts):
        raise OutputRefused(f"The output file path {relative!r} is not a plain path")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    folder = os.open(base, flags)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, flags, dir_fd=folder)
            except OSError:
                raise OutputRefused(
                    f"The output file's folder {part!r} is a link or missing"
                ) from None
            os.close(folder)
            folder = inner
        target = spec.outputs / uuid.uuid4().hex
        target.mkdir(parents=True)
        destination = target / parts[-1]
        try:
            os.rename(parts[-1], destination, src_dir_fd=folder)
        except OSError as exc:
            raise OutputRefused(f"The output file {parts[-1]!r} cannot be read: {exc}") from None
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.lstat(destination).st_mode):
        destination.unlink()
        raise OutputRefused(f"The output file {parts[-1]!r} is not a regular file")
    return destination


async def guarded(
    events: AsyncIterator[Event],
    spec: SandboxSpec | None,
    package_dir: Path,
    limits: Limits | None,
) -> AsyncIterator[Event]:
    """`events` with output files claimed (in a sandbox) and the output limit checked; a file
    that cannot be handed on fails the prediction (and ends it in the worker)."""
    claims = _Claims(spec, package_dir, limits)
    try:
        async for event in events:
            try:
                if isinstance(event, Output) and _has_files(event.value):
                    event = replace(event, value=await asyncio.to_thread(claims.value, event.value))
                elif isinstance(event, Done):
                    output = event.output
                    if _has_files(output):  # moving files is off the loop; a plain value stays
                        output = await asyncio.to_thread(claims.value, output)
                    event = replace(event, output=output, error=_explained(event.error, limits))
            except OutputRefused as exc:
                yield Done("failed", error=str(exc))
                return
            yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def _has_files(value: Any) -> bool:
    if isinstance(value, OutputFile):
        return True
    if isinstance(value, dict):
        return any(_has_files(v) for v in value.values())
    if isinstance(value, list):
        return not all_scalars(value) and any(_has_files(v) for v in value)
    return False


def _explained(error: str | None, limits: Limits | None) -> str | None:
    """An error from passing a limit the kernel enforces (open files, one file's size), with
    the limit that was reached."""
    if error is None or limits is None:
        return error
    if limits.open_files and "Too many open files" in error:
        return f"{error} (the limit of {limits.owner} is {limits.open_files} open files)"
    if limits.scratch and "File too large" in error:
        scratch = size(limits.scratch)
        return f"{error} (the limit of {limits.owner} is {scratch} of scratch space)"
    return error


def into_inbox(inputs: dict[str, Any], fields: dict[str, bool], folder: Path) -> dict[str, Any]:
    """`inputs` with the file paths outside `folder` (local files given on the command line)
    copied into it, so a sandboxed worker can read them."""
    result = dict(inputs)
    for name, is_list in fields.items():
        value = result.get(name)
        if value is None:
            continue
        if is_list:
            result[name] = [_copied(v, folder, f"{name}-{i}") for i, v in enumerate(value)]
        else:
            result[name] = _copied(value, folder, name)
    return result


def _copied(value: str, folder: Path, slot: str) -> str:
    path = Path(value)
    if path.is_relative_to(folder):
        return value
    target = folder / slot / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return str(target)
