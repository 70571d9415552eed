"""A Cog package run on this machine: its config, schema, environment and runner together.

This is what the command line and the engine use to run one model version: `validate()` checks
an input against the schema (before anything runs), `predict()` fetches file inputs, runs the
prediction in the worker and yields its events, and cleans up the fetched files afterwards.

In a sandbox (runtime/sandbox.py, on by default where bubblewrap works), input files are fetched
into the instance's inbox, which the worker reads at the same path, and the output files it names
are moved out of its reach before anyone reads them (runtime/outputs.py).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from modelyard.cogspec.config import CogConfig, load_config
from modelyard.cogspec.inputs import file_fields, input_component, validate_input
from modelyard.cogspec.schema import predictor_schema

from . import sandbox as sandboxing
from .downloads import InputFileError, localize_files
from .environment import Environment, EnvironmentBuilder, spec_from_config
from .events import Done, Event
from .home import modelyard_home
from .outputs import guarded, into_inbox
from .runner import Mode, Runner, RunnerSpec, SetupResult
from .sandbox import Limits, SandboxSpec
from .templates import Templates

Progress = Callable[[str], None]


class LocalModel:
    """One Cog package, its environment and (once started) its worker."""

    def __init__(
        self,
        package_dir: Path | str,
        *,
        mode: Mode = "predict",
        builder: EnvironmentBuilder | None = None,
        setup_timeout: float | None = None,
        weights: str | None = None,
        allow_local_paths: bool = False,
        http_client: httpx.AsyncClient | None = None,
        schema: dict[str, Any] | None = None,
        collect_stream: bool = True,
        worker_environment: Mapping[str, str] | None = None,
        sandbox: bool | None = False,
        limits: Limits | None = None,
        templates: Templates | None = None,
        template_idle_timeout: float = 300.0,
    ) -> None:
        """`sandbox`: None runs the worker in a sandbox where bubblewrap works (unless
        `MODELYARD_SANDBOX=off`), as the engine and `modelyard predict` do; True insists
        (SandboxError when it cannot); False, the default for a library caller, runs it
        unsandboxed. `limits` applies either way, as far as it can without a sandbox.
        `templates`: start from a warm template of this version when there is one, and leave
        one for the next instance (runtime/templates.py), given back after
        `template_idle_timeout` seconds unused."""
        self.package_dir = Path(package_dir).resolve()
        self.mode = mode
        self.config: CogConfig = load_config(self.package_dir)
        # A pushed version's schema was stored when it was pushed: use it, do not derive it again.
        self.schema: dict[str, Any] = (
            schema if schema is not None else predictor_schema(self.package_dir, self.config)
        )
        self.component = input_component(mode)
        _ = self.ref  # fails early, with a clear message, when cog.yaml lacks the entry
        self.builder = builder or EnvironmentBuilder()
        self.setup_timeout = setup_timeout
        self.weights = weights
        self.allow_local_paths = allow_local_paths
        self.http_client = http_client  # fetches URL inputs; the engine serves its own files
        # Whether a stream's Done carries its items (the engine keeps them in its event log).
        self.collect_stream = collect_stream
        # Variables the platform sets for the worker (the GPUs it may see): they win over
        # cog.yaml's `environment`, so a package cannot reach GPUs it was not given.
        self.worker_environment: dict[str, str] = dict(worker_environment or {})
        self.environment: Environment | None = None
        self.runner: Runner | None = None
        self._file_fields = file_fields(self.schema, self.component)
        self.limits = limits
        self.templates = templates
        self.template_idle_timeout = template_idle_timeout
        #: The last boot's phases in seconds: environment_time, import_time, setup_time.
        self.boot_phases: dict[str, float] = {}
        self.sandbox: SandboxSpec | None = None
        if sandbox is None:
            sandbox = sandboxing.wanted() and sandboxing.unavailable_reason() is None
        elif sandbox and (reason := sandboxing.unavailable_reason()) is not None:
            raise sandboxing.SandboxError(reason)
        if sandbox:
            parent = modelyard_home() / "sandboxes"
            parent.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="instance-", dir=parent))
            shown = (Path(weights),) if weights is not None and Path(weights).exists() else ()
            self.sandbox = SandboxSpec(root, read_only=shown + sandboxing.shared_folders())

    @property
    def ref(self) -> str:
        ref = self.config.train if self.mode == "train" else self.config.predict
        if ref is None:
            key = "train" if self.mode == "train" else "run"
            raise ValueError(f"cog.yaml in {self.package_dir} has no '{key}:' entry")
        return ref

    @property
    def file_fields(self) -> dict[str, bool]:
        """Inputs that hold files -> whether each is a list."""
        return self._file_fields

    def validate(self, payload: object) -> dict[str, Any]:
        """The input with defaults applied; raises `InputValidationError` listing every problem."""
        return validate_input(self.schema, payload, self.component)

    async def ensure_environment(self, progress: Progress | None = None) -> Environment:
        """Build the environment if needed (in a thread: builds take seconds to minutes)."""
        if self.environment is None:
            spec = spec_from_config(self.config)
            self.environment = await asyncio.to_thread(
                self.builder.ensure, spec, self.package_dir, progress
            )
        return self.environment

    async def start(self, progress: Progress | None = None) -> SetupResult:
        """Build the environment, start the worker and run `setup()` (logs go to `progress`)."""
        began = time.perf_counter()
        environment = await self.ensure_environment(progress)
        environment_time = time.perf_counter() - began
        if self.runner is None:
            spec = RunnerSpec(
                package_dir=self.package_dir,
                python=environment.python,
                ref=self.ref,
                mode=self.mode,
                environment={**self.config.environment, **self.worker_environment},
                max_concurrency=self.config.concurrency_max
                if self.config.concurrency_max > 1
                else None,
                weights=self.weights,
                setup_timeout=self.setup_timeout or _setup_timeout_from(self.config),
                sandbox=self.sandbox,
                limits=self.limits,
            )
            template = await self.templates.claim(spec) if self.templates is not None else None
            if template is not None:
                await self._adopt(template)
                template.on_setup_log = progress
                self.runner = template
            else:
                self.runner = Runner(spec, on_setup_log=progress)
        result = await self.runner.start()
        self.boot_phases = {"environment_time": environment_time, **self.runner.phases}
        if progress is not None:
            progress(describe_boot(self.boot_phases, self.runner.from_template))
        if self.templates is not None:  # the next instance of this version starts warm
            self.templates.ready(self.runner, self.template_idle_timeout)
        return result

    async def _adopt(self, template: Runner) -> None:
        """Take over a template's worker: its sandbox becomes this model's (ours was unused)."""
        if self.sandbox is not None:
            await asyncio.to_thread(shutil.rmtree, self.sandbox.root, True)
        self.sandbox = template.spec.sandbox

    def predict(
        self,
        inputs: dict[str, Any],
        *,
        prediction_id: str | None = None,
        context: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Event]:
        """Run one prediction on validated `inputs`; yields the runner's events."""
        if self.runner is None:
            raise RuntimeError("start() the model before predicting")
        if not self._file_fields:  # nothing to fetch: the runner's stream as it is
            events = self.runner.predict(
                inputs,
                prediction_id=prediction_id,
                context=context,
                timeout=timeout,
                collect=self.collect_stream,
            )
        else:
            events = self._predict_with_files(inputs, prediction_id, context, timeout)
        if self.sandbox is None and self.limits is None:
            return events
        return guarded(events, self.sandbox, self.package_dir, self.limits)

    async def _predict_with_files(
        self,
        inputs: dict[str, Any],
        prediction_id: str | None,
        context: dict[str, str] | None,
        timeout: float | None,
    ) -> AsyncIterator[Event]:
        assert self.runner is not None
        # In a sandbox, the inbox: the worker sees it (read-only) where it is here.
        inbox = self.sandbox.inbox if self.sandbox is not None else None
        if inbox is not None:
            inbox.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="modelyard-in-", dir=inbox))
        try:
            try:
                inputs = await localize_files(
                    inputs,
                    self._file_fields,
                    scratch,
                    allow_local_paths=self.allow_local_paths,
                    client=self.http_client,
                )
                if inbox is not None:  # local paths (the command line): copied in
                    inputs = await asyncio.to_thread(into_inbox, inputs, self._file_fields, scratch)
            except InputFileError as exc:
                yield Done("failed", error=str(exc))
                return
            async for event in self.runner.predict(
                inputs,
                prediction_id=prediction_id,
                context=context,
                timeout=timeout,
                collect=self.collect_stream,
            ):
                yield event
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def cancel(self, prediction_id: str) -> bool:
        return self.runner is not None and await self.runner.cancel(prediction_id)

    async def stop(self) -> None:
        """Stop the worker; in a sandbox, its scratch and inbox go too. Output files stay
        until `discard_outputs` (the command line saves them after stopping)."""
        try:
            if self.runner is not None:
                await self.runner.stop()
                if self.templates is not None:  # its template's idle time starts again
                    self.templates.touch(self.runner.spec)
        finally:
            if self.sandbox is not None:
                await asyncio.to_thread(_clear, self.sandbox)

    async def discard_outputs(self) -> None:
        """Remove the sandbox's folder with the output files it handed back (once they are
        stored or saved)."""
        if self.sandbox is not None:
            await asyncio.to_thread(shutil.rmtree, self.sandbox.root, True)


def describe_boot(phases: dict[str, float], from_template: bool) -> str:
    """The boot's log line: `Boot: environment 0.01 s, import 5.20 s, setup 1.10 s`."""
    parts = [
        f"{label} {phases[key]:.2f} s"
        for label, key in (
            ("environment", "environment_time"),
            ("import", "import_time"),
            ("setup", "setup_time"),
        )
        if key in phases
    ]
    source = " (from a warm template: imports done ahead)" if from_template else ""
    return f"Boot: {', '.join(parts)}{source}"


def _clear(spec: SandboxSpec) -> None:
    """Remove a stopped sandbox's scratch and inbox, and all of it when it holds no output."""
    for folder in (spec.scratch, spec.inbox):
        shutil.rmtree(folder, ignore_errors=True)
    if not spec.outputs.is_dir() or not any(spec.outputs.iterdir()):
        shutil.rmtree(spec.root, ignore_errors=True)


def _setup_timeout_from(config: CogConfig) -> float | None:
    """`COG_SETUP_TIMEOUT` from cog.yaml's `environment`, which Cog honours too."""
    try:
        return float(config.environment["COG_SETUP_TIMEOUT"])
    except (KeyError, ValueError):
        return None
