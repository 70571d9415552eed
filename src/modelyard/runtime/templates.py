"""Warm templates: for the versions used last, a worker that has already imported the model's
modules and waits, so that the next instance of that version pays only its setup().

A template is a worker started `warm` (modelyard_worker/boot.py) in a sandbox of its own, as
any instance's: it imports what the last setup() of the same version imported from outside its
package (torch, transformers, ... : most of a cold boot), then the predictor's module, and waits.
An instance that starts takes the template over (its process, its sandbox, its limits) and tells
it to run setup(); nothing is shared between two instances, so a template is as safe as a cold
worker. Then a new template is made for the next instance, once this one is ready and has been
quiet (no prediction) for `QUIET` seconds, or `QUIET_MAX` seconds have passed: an import beside a
model that is serving slows its predictions down (the embeddings model's took 2-25x longer while
its template imported torch next to it), so it waits for a pause. It imports at normal priority:
a lower one (nice, SCHED_IDLE) would be inherited by the threads its imports start (OpenBLAS
starts its pool when numpy loads) and could not be raised back without privileges, so the
instance that takes the template over would compute on starved threads. An instance that starts
before the template began importing boots cold.

Why not fork one warm process per instance: every worker's sandbox (its /tmp, home and inbox
mounts, its PID namespace) and limits are fixed when bubblewrap starts it, and the runner owns
its worker as a child process (killed by process group, watched by `wait`); a child forked
inside another instance's sandbox would share that instance's scratch and could not be killed
or limited alone. A template per version costs one import in the background instead.

Bounded: templates for at most `count` versions (`MODELYARD_WARM_TEMPLATES`, default 2; 0 turns
them off), the least recently used given back first; each within its instance's limits, and
given back `idle_timeout` seconds after its version was last used (an instance started or
stopped), so scale to zero frees everything after the idle timeout. `stats()` shows them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from . import limits
from .home import modelyard_home
from .runner import Runner, RunnerSpec
from .sandbox import SandboxSpec

log = logging.getLogger(__name__)

COUNT_ENV = "MODELYARD_WARM_TEMPLATES"
DEFAULT_COUNT = 2
#: A template that has not imported its modules by then is given back.
WARM_TIMEOUT = 600.0
#: Versions whose imports are remembered (a few names each).
LEARNED_MAX = 256
#: Seconds the instance that made a template must have been without a prediction before the
#: template starts importing; after QUIET_MAX seconds it starts anyway.
QUIET = 2.0
QUIET_MAX = 60.0


def default_count() -> int:
    """`MODELYARD_WARM_TEMPLATES`, or DEFAULT_COUNT when unset or not a number."""
    value = os.environ.get(COUNT_ENV, "").strip()
    return int(value) if value.isdigit() else DEFAULT_COUNT


def template_key(spec: RunnerSpec) -> str:
    """What two instances must share to use the same template: everything but the sandbox's
    own folder (the GPUs a worker sees are in `environment`, so they must match too)."""
    shown = spec.sandbox.read_only if spec.sandbox is not None else None
    return repr(
        (
            str(spec.package_dir),
            str(spec.python),
            spec.ref,
            spec.mode,
            sorted(spec.environment.items()),
            spec.max_concurrency,
            spec.weights,
            spec.sandbox is not None,
            shown,
            spec.limits,
        )
    )


@dataclasses.dataclass(frozen=True)
class TemplateStats:
    """One template as `Templates.stats` shows it (the metrics export these)."""

    name: str  # the package and predictor it is for
    state: str  # waiting (for a pause) | warming | warm | failed
    pid: int | None
    memory_bytes: int  # resident, of its process tree
    age_seconds: float
    modules: int  # modules it preloads


@dataclasses.dataclass(frozen=True)
class Learned:
    """What a version's last cold boot imported, and what its load and setup() changed."""

    modules: list[str]
    environ: dict[str, str | None]


@dataclasses.dataclass
class Template:
    """One waiting worker of a version."""

    key: str
    name: str  # the package's folder and predictor, for people
    runner: Runner
    idle_timeout: float
    created: float = dataclasses.field(default_factory=time.time)
    timer: asyncio.TimerHandle | None = None
    importing: bool = False  # past the wait for a pause
    warming: asyncio.Task[bool] = dataclasses.field(init=False)  # True once imported


class Templates:
    """The warm templates of this machine's local instances (one per version, at most
    `count`)."""

    def __init__(self, count: int | None = None) -> None:
        self.count = default_count() if count is None else count
        # Per version: what its last cold boot imported, and what that changed (variables,
        # import path); versions whose templates did not agree with it preload nothing.
        self._learned: collections.OrderedDict[str, Learned] = collections.OrderedDict()
        self._no_preload: set[str] = set()
        self._templates: collections.OrderedDict[str, Template] = collections.OrderedDict()
        self._stopping: set[asyncio.Task[None]] = set()
        self.used = 0  # instances that started from a template

    async def claim(self, spec: RunnerSpec) -> Runner | None:
        """The template of `spec`'s version, taken over (its worker waits for `start()`), or
        None when there is none. One still importing is waited for: it is ahead of a cold
        worker. The caller owns the runner (and its sandbox) from here."""
        template = self._templates.pop(template_key(spec), None)
        if template is None:
            return None
        if template.timer is not None:
            template.timer.cancel()
        if not template.importing:  # still waiting for a pause: no better than a cold boot
            self._stop(template)
            return None
        try:
            warm = await asyncio.shield(template.warming)
        except asyncio.CancelledError:  # the boot was canceled: the template goes
            self._stop(template)
            raise
        if not warm:
            self._stop(template)
            return None
        learned = self._learned.get(template.key)
        expected = learned.environ if learned is not None else {}
        got = template.runner.environ
        if any(got.get(name) != value for name, value in expected.items()):
            # Its imports alone did not make the changes load and setup() made: setup() may
            # set something those imports read. Cold now; later templates preload nothing.
            log.info(
                "warm template for %s not used: setup() changes what imports see", template.name
            )
            self._no_preload.add(template.key)
            self._stop(template)
            return None
        self.used += 1
        return template.runner

    def ready(self, runner: Runner, idle_timeout: float) -> None:
        """An instance's `runner` is ready (its `modules` and `environ` say what its load and
        setup() imported and changed): make a template for the next instance of its version,
        unless one is waiting already."""
        if self.count <= 0:
            return
        spec = runner.spec
        key = template_key(spec)
        learned = Learned(runner.modules, runner.environ)
        if key in self._no_preload:
            learned = Learned([], {})  # the predictor's module only: as a cold boot does
        self._learned[key] = learned
        modules = learned.modules
        self._learned.move_to_end(key)
        while len(self._learned) > LEARNED_MAX:
            self._learned.popitem(last=False)
        if key in self._templates:
            self.touch(spec)
            return
        waiting = Runner(dataclasses.replace(spec, sandbox=_own_sandbox(spec.sandbox)))
        name = f"{Path(spec.package_dir).name}/{spec.ref}"
        template = Template(key, name, waiting, idle_timeout)
        template.warming = asyncio.ensure_future(_warm(template, runner, modules))
        self._templates[key] = template
        self._schedule(template)
        while len(self._templates) > self.count:  # the least recently used goes
            _, oldest = self._templates.popitem(last=False)
            self._stop(oldest)
        log.info("warm template for %s: importing %d modules", name, len(modules))

    def touch(self, spec: RunnerSpec) -> None:
        """`spec`'s version was used (an instance stopped): its template's idle time starts
        again."""
        template = self._templates.get(template_key(spec))
        if template is not None:
            self._templates.move_to_end(template.key)
            self._schedule(template)

    def stats(self) -> list[TemplateStats]:
        """What the templates hold now: one row per template, most recently used last."""
        rows = []
        for template in self._templates.values():
            pid = template.runner.pid
            usage = limits.tree_usage(pid) if pid is not None else None
            warming = template.warming
            state = "warming" if not warming.done() else "warm"
            if not template.importing:
                state = "waiting"
            if warming.done() and (
                warming.cancelled() or warming.exception() or not warming.result()
            ):
                state = "failed"
            learned = self._learned.get(template.key)
            rows.append(
                TemplateStats(
                    name=template.name,
                    state=state,
                    pid=pid,
                    memory_bytes=usage.memory if usage is not None else 0,
                    age_seconds=round(time.time() - template.created, 1),
                    modules=len(learned.modules) if learned else 0,
                )
            )
        return rows

    async def close(self) -> None:
        """Give every template back and wait until their workers are gone."""
        while self._templates:
            _, template = self._templates.popitem()
            self._stop(template)
        while self._stopping:
            await asyncio.wait(set(self._stopping))

    def _schedule(self, template: Template) -> None:
        if template.timer is not None:
            template.timer.cancel()
        template.timer = asyncio.get_running_loop().call_later(
            template.idle_timeout, self._expire, template
        )

    def _expire(self, template: Template) -> None:
        if self._templates.get(template.key) is template:
            del self._templates[template.key]
            log.info("warm template for %s given back (idle)", template.name)
            self._stop(template)

    def _stop(self, template: Template) -> None:
        if template.timer is not None:
            template.timer.cancel()
        task = asyncio.ensure_future(_give_back(template))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)


async def _warm(template: Template, beside: Runner, modules: list[str]) -> bool:
    """Wait for a pause of the instance `beside` (at most QUIET_MAX seconds), then import."""
    loop = asyncio.get_running_loop()
    until = loop.time() + QUIET_MAX
    while (quiet := beside.quiet_for()) < QUIET and loop.time() < until:
        await asyncio.sleep(max(QUIET - quiet, 0.1))
    template.importing = True
    return await template.runner.prewarm(modules, WARM_TIMEOUT)


async def _give_back(template: Template) -> None:
    """Stop the template's worker (it is still importing, or waiting) and remove its sandbox."""
    template.warming.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # it goes away anyway
        await template.warming
    try:
        await template.runner.stop()
    finally:
        sandbox = template.runner.spec.sandbox
        if sandbox is not None:
            await asyncio.to_thread(shutil.rmtree, sandbox.root, True)


def _own_sandbox(sandbox: SandboxSpec | None) -> SandboxSpec | None:
    """A new sandbox folder like `sandbox` (what it shows, read-only, is the same)."""
    if sandbox is None:
        return None
    parent = modelyard_home() / "sandboxes"
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="template-", dir=parent))
    return SandboxSpec(root, read_only=sandbox.read_only)
