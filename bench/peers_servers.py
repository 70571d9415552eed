"""BentoML and Ray Serve serving the no-op model, as their users serve it, for `bench/peers.py`.

Each runs from its own throwaway environment (`bench/peers_envs.py`) in a session of its own,
on a free port of 127.0.0.1, from a temporary folder that holds its service file and whatever
it writes (BentoML's home, Ray's temporary folder):

- BentoML 1.4: a `@bentoml.service` class whose `@bentoml.api` method returns its input,
  served by `bentoml serve` with one worker (the model runs in the API's process: no runner);
- Ray Serve 2.60: a `@serve.deployment` with one replica whose `__call__` returns the request's
  `text`, run by a driver that starts its own local Ray (its own temporary folder, no
  dashboard, no usage stats), `serve.run`s the app on the port, and waits for its standard
  input to close; then it shuts Serve and Ray down. It never runs `ray stop` (which would stop
  every cluster on the machine): whatever it started is ended by PID, as a last resort.

Both answer `POST /predict` (BentoML) or `POST /` (Ray Serve) with `{"text": "ok"}` by the
text `ok`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

from bench.coglet import free_port
from bench.modelyard_serve import descendants

START_TIMEOUT = 180.0  # Ray starts a cluster, a controller, a proxy and a replica

BENTOML_SERVICE = '''\
"""The no-op model as a BentoML service: returns its input."""

import bentoml


@bentoml.service(workers=1)
class Noop:
    @bentoml.api
    def predict(self, text: str = "ok") -> str:
        return text
'''

RAY_DRIVER = '''\
"""The no-op model as a Ray Serve deployment, on a Ray of its own; stops when stdin closes."""

import sys

import ray
from ray import serve
from starlette.requests import Request


@serve.deployment(num_replicas=1)
class Noop:
    async def __call__(self, request: Request) -> str:
        body = await request.json()
        return body.get("text", "ok")


port, temp_dir = int(sys.argv[1]), sys.argv[2]
ray.init(
    _temp_dir=temp_dir,
    include_dashboard=False,
    num_cpus=2,
    object_store_memory=100_000_000,
    log_to_driver=False,
)
serve.start(http_options={"host": "127.0.0.1", "port": port})
serve.run(Noop.bind(), name="noop", route_prefix="/")
print("READY", flush=True)
sys.stdin.read()  # the benchmark closes it to stop us
serve.shutdown()
ray.shutdown()
'''


class PeerProcess:
    """A server started from a peer's environment in a session of its own; stopped by PID."""

    name = ""
    path = "/"
    ping = "/"

    def __init__(self, python: Path) -> None:
        self.python = python
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: str | None = None
        self._family: set[int] = set()

    @property
    def folder(self) -> Path:
        assert self._tmp is not None
        return Path(self._tmp)

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}

    def start(self) -> PeerProcess:
        # Short and private: Ray's Unix sockets live below, and the kernel limits their length.
        self._tmp = tempfile.mkdtemp(prefix=f"mypeer-{self.name}-", dir="/tmp")
        self.write_files()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.folder,
                stdin=subprocess.PIPE,  # Ray's driver stops when it closes
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{_tail(self.logs())}")
                with contextlib.suppress(httpx.TransportError):
                    if client.post(self.path, json={"text": "ok"}).text == "ok":
                        self._family.update(descendants(self.process.pid))
                        return self
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} not up after {START_TIMEOUT:g} s:\n{_tail(self.logs())}"
                    )
                time.sleep(0.25)

    def write_files(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Ask it to stop (stdin closed, then SIGTERM to its group); then end, by PID, every
        process it was seen to start, so that nothing outlives it."""
        if self.process is not None:
            self._family.update(descendants(self.process.pid))
            if self.process.stdin is not None:
                with contextlib.suppress(OSError):
                    self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            for pid in self._family:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self.process = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                subprocess.run(["rm", "-rf", self._tmp], check=False, timeout=60)
            self._tmp = None


class BentoMLServer(PeerProcess):
    """`bentoml serve service:Noop` with one worker."""

    name = "bentoml"
    path = "/predict"
    ping = "/readyz"

    def write_files(self) -> None:
        (self.folder / "service.py").write_text(BENTOML_SERVICE)

    def command(self) -> list[str]:
        return [
            str(self.python), "-m", "bentoml", "serve", "service:Noop",
            "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "BENTOML_HOME": str(self.folder / "bentoml-home"),
            "BENTOML_DO_NOT_TRACK": "True",
        }

    def stop(self) -> None:
        # `bentoml serve` stops on SIGTERM, not on its stdin: skip the 30 s wait.
        if self.process is not None and self.process.poll() is None:
            self._family.update(descendants(self.process.pid))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
        super().stop()


class RayServeServer(PeerProcess):
    """A driver with its own local Ray, running the no-op deployment with one replica."""

    name = "rayserve"
    path = "/"
    ping = "/-/healthz"

    def write_files(self) -> None:
        (self.folder / "driver.py").write_text(textwrap.dedent(RAY_DRIVER))

    def command(self) -> list[str]:
        return [str(self.python), "driver.py", str(self.port), str(self.folder / "ray")]

    def env(self) -> dict[str, str]:
        # Ours, not a cluster's that the environment may name (tests set RAY_ADDRESS).
        env = {k: v for k, v in super().env().items() if not k.startswith("RAY_")}
        return {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
