"""Cog's own server (coglet 0.23.1, from PyPI) run without Docker, for side-by-side comparisons.

Used by the differential tests (``tests/differential/``) and the benchmarks::

    with CogletServer(package_dir, schema, env_python) as server:
        server.predict({"text": "hi"})          # -> the prediction JSON (status 200)
        server.post_prediction({"n": 11})       # -> the raw httpx.Response (e.g. 422)

How it runs coglet (``reference/cog.md`` §8): the package is copied to a temporary folder (the
fixture is never modified), the schema Modelyard generated is written to
``<copy>/.cog/openapi_schema.json`` (coglet only loads a schema, it never generates one), and
``python -m cog.server.http --host 127.0.0.1`` is started in that folder with ``PORT``,
``COG_PREDICT_TYPE_STUB`` (or ``COG_TRAIN_TYPE_STUB`` and ``--x-mode train``), the ``cog.yaml``
``environment:`` entries and ``COG_MAX_CONCURRENCY`` as Cog's Dockerfile bakes them, and the
environment's ``bin`` first on ``PATH`` (coglet spawns its worker as a bare ``python``). Startup
waits for ``/health-check`` to say ``READY`` or ``SETUP_FAILED``.

The interpreter is the model's Modelyard environment (``EnvironmentBuilder``), which holds
``cog==0.23.1`` and ``coglet==0.23.1``: :meth:`CogletServer.for_package` builds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

STARTUP_TIMEOUT = 120.0
#: How long `predict()` keeps retrying a 409 (coglet frees a slot only after it answered, so a
#: request sent right after a response can be refused; see reference/cog.md §4).
RETRY_409_SECONDS = 5.0


class CogletError(RuntimeError):
    """coglet did not start, or answered with something other than what was asked for."""


class CogletHTTPError(CogletError):
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status_code = response.status_code
        try:
            self.body: Any = response.json()
        except ValueError:
            self.body = response.text
        super().__init__(f"coglet answered {response.status_code}: {self.body}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CogletServer:
    """One coglet server for one Cog package; a context manager (``start()``/``stop()``)."""

    def __init__(
        self,
        package_dir: Path | str,
        schema: dict[str, Any],
        env_python: Path | str,
        port: int | None = None,
        *,
        mode: str = "predict",
        max_concurrency: int | None = None,
        environment: dict[str, str] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        """``max_concurrency``/``environment`` default to what the package's ``cog.yaml`` says."""
        self.package_dir = Path(package_dir).resolve()
        self.schema = schema
        self.env_python = Path(env_python)
        self.port = port
        self._fixed_port = port
        self.mode = mode
        self.startup_timeout = startup_timeout
        config = _load_config(self.package_dir)
        self.ref = config.train if mode == "train" else config.predict
        if self.ref is None:
            raise CogletError(f"{self.package_dir}/cog.yaml has no {mode!r} predictor")
        if max_concurrency is None and config.concurrency_max > 1:
            max_concurrency = config.concurrency_max
        self.max_concurrency = max_concurrency
        self.environment = dict(config.environment) if environment is None else dict(environment)
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None
        self.health: dict[str, Any] = {}
        #: Spurious 409s absorbed by `predict()`'s retry.
        self.conflicts = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def for_package(
        cls,
        package_dir: Path | str,
        builder: Any = None,
        *,
        mode: str = "predict",
        progress: Any = None,
        **kwargs: Any,
    ) -> CogletServer:
        """A server for ``package_dir`` with Modelyard's schema and environment (built if needed)."""
        from modelyard.cogspec.schema import predictor_schema
        from modelyard.runtime.environment import EnvironmentBuilder, spec_from_config

        package_dir = Path(package_dir).resolve()
        config = _load_config(package_dir)
        schema = predictor_schema(package_dir, config)
        builder = builder or EnvironmentBuilder()
        env = builder.ensure(spec_from_config(config), package_dir, progress)
        return cls(package_dir, schema, env.python, mode=mode, **kwargs)

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def status(self) -> str | None:
        """The last health status seen (``READY``, ``SETUP_FAILED``, ...)."""
        return self.health.get("status")

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir.parent / "coglet.log"

    def logs(self) -> str:
        """coglet's own log (JSON lines on its stdout/stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""

    def start(self, wait: bool = True) -> CogletServer:
        """Start coglet; returns once ``/health-check`` says READY or SETUP_FAILED.

        With ``wait=False`` it returns at once; call :meth:`wait_until_started` later (to start
        something else meanwhile).
        """
        self._tmp = tempfile.TemporaryDirectory(prefix="modelyard-coglet-")
        root = Path(self._tmp.name)
        self.workdir = root / "src"
        shutil.copytree(
            self.package_dir,
            self.workdir,
            symlinks=True,
            ignore=shutil.ignore_patterns(".cog", "__pycache__", ".git"),
        )
        (self.workdir / ".cog").mkdir()
        (self.workdir / ".cog" / "openapi_schema.json").write_text(json.dumps(self.schema))
        if self.port is None:
            self.port = free_port()
        args = [str(self.env_python), "-m", "cog.server.http", "--host", "127.0.0.1"]
        if self.mode == "train":
            args += ["--x-mode", "train"]
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                args,
                cwd=self.workdir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        # Sync predictions are canceled when the client disconnects: never time out first.
        self.client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(600.0, connect=10.0))
        if wait:
            self.wait_until_started()
        return self

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
            and not k.startswith(("COG_", "MODELYARD_"))
        }
        env.update(self.environment)
        bin_dir = self.env_python.parent
        env["PATH"] = str(bin_dir) + os.pathsep + env.get("PATH", os.defpath)
        env["VIRTUAL_ENV"] = str(bin_dir.parent)
        env["PYTHONUNBUFFERED"] = "1"  # as in Cog's Dockerfile
        env["PORT"] = str(self.port)
        env["COG_TRAIN_TYPE_STUB" if self.mode == "train" else "COG_PREDICT_TYPE_STUB"] = self.ref
        if self.max_concurrency is not None:
            env["COG_MAX_CONCURRENCY"] = str(self.max_concurrency)
        return env

    def wait_until_started(self) -> None:
        """Wait for READY or SETUP_FAILED; stops the server and raises CogletError otherwise."""
        try:
            self._wait_until_started()
        except BaseException:
            self.stop()
            raise

    def restart(self) -> CogletServer:
        """A fresh coglet (after its worker died, coglet answers 409 forever)."""
        self.stop()
        self.port = self._fixed_port
        return self.start()

    def _wait_until_started(self) -> None:
        assert self.client is not None and self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise CogletError(
                    f"coglet exited with status {self.process.returncode} during startup:\n"
                    + _tail(self.logs())
                )
            try:
                self.health = self.client.get("/health-check").json()
            except (httpx.TransportError, ValueError):
                self.health = {}
            if self.status in ("READY", "SETUP_FAILED"):
                return
            if time.monotonic() > deadline:
                raise CogletError(
                    f"coglet not ready after {self.startup_timeout:g} s (health: {self.health}):\n"
                    + _tail(self.logs())
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop coglet and its worker (the whole process group) and remove the copy."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process is not None:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            # The worker is in the same group; make sure nothing outlives the server.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> CogletServer:  # noqa: PYI034 - returns self, started
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_size(self) -> int:
        """The length of coglet's log so far (to read only what a later request adds)."""
        try:
            return self.log_path.stat().st_size
        except (OSError, AssertionError):
            return 0

    def user_output(self, since: int = 0) -> list[str]:
        """Lines the model wrote straight to fds 1/2 (subprocesses, C code), from ``since``.

        coglet 0.23.1 does not put these in the prediction's ``logs``: it logs them itself, as
        ``{"target": "coglet::user", "fields": {"message": ...}}``.
        """
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                text = f.read().decode("utf-8", errors="replace")
        except (OSError, AssertionError):
            return []
        lines = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("target") == "coglet::user":
                lines.append(str((record.get("fields") or {}).get("message", "")))
        return lines

    # --- requests -----------------------------------------------------------------------

    def get_health(self) -> dict[str, Any]:
        assert self.client is not None, "start() the server first"
        self.health = self.client.get("/health-check").json()
        return self.health

    def post_prediction(
        self,
        input: Any,
        *,
        prediction_id: str | None = None,
        context: dict[str, str] | None = None,
        retry_409: float = RETRY_409_SECONDS,
    ) -> httpx.Response:
        """``POST /predictions`` (``/trainings`` in train mode), synchronously; the raw response.

        A 409 is retried for ``retry_409`` seconds (0: never), counting each in ``conflicts``.
        """
        assert self.client is not None, "start() the server first"
        body: dict[str, Any] = {"input": input}
        if prediction_id is not None:
            body["id"] = prediction_id
        if context is not None:
            body["context"] = context
        path = "/trainings" if self.mode == "train" else "/predictions"
        deadline = time.monotonic() + retry_409
        while True:
            response = self.client.post(path, json=body)
            if response.status_code != 409 or time.monotonic() >= deadline:
                return response
            self.conflicts += 1

    def predict(self, input: Any, **kwargs: Any) -> dict[str, Any]:
        """The prediction JSON of a 200 answer; raises :class:`CogletHTTPError` otherwise."""
        response = self.post_prediction(input, **kwargs)
        if response.status_code != 200:
            raise CogletHTTPError(response)
        return response.json()


def _load_config(package_dir: Path) -> Any:
    from modelyard.cogspec.config import load_config

    return load_config(package_dir)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
