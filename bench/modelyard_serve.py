"""`modelyard serve` as a subprocess for benchmarks: plain http on a free port, its own data dir.

    server = ModelyardServer(tmp / "data").start()   # a token made with `modelyard token create`
    version = server.push(package_dir, "admin/noop")  # `modelyard push`; the version id
    ... requests to server.url with server.auth ...
    server.stop()

No TLS, unlike the end-to-end tests' server (``tests/e2e/live.py``): the benchmarks compare with
coglet, which serves plain http. Extra ``serve`` options (``--max-instances 1``, rate limits off
for a load test) are given to the constructor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.coglet import free_port

START_TIMEOUT = 60.0


class ModelyardServer:
    """`modelyard serve` as a subprocess on a free port over plain http, with its own data dir."""

    def __init__(
        self,
        data_dir: Path,
        serve_args: list[str] | None = None,
        *,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.serve_args = list(serve_args or [])
        self.database_url = database_url  # shared by replicas; None: SQLite in data_dir
        self.env = {**_env(), **(env or {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"modelyard-serve-{data_dir.name}.log"

    def start(self) -> ModelyardServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        database = ["--database-url", self.database_url] if self.database_url else []
        self.token = self.cli(
            "token", "create", "--data-dir", str(self.data_dir), *database
        ).strip()
        args = [
            "serve",
            "--data-dir", str(self.data_dir),
            "--port", str(self.port),
            *database,
            *self.serve_args,
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [_modelyard(), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # a Ctrl-C of the benchmark reaches it only via stop()
            )
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=self.url, headers=self.auth) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"modelyard serve exited:\n{self.logs()}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/v1/predictions").status_code == 200:
                        return self
                if time.monotonic() > deadline:
                    raise RuntimeError(f"modelyard serve is not up after {START_TIMEOUT:g} s")
                time.sleep(0.1)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            [_modelyard(), *args],
            check=False,
            capture_output=True,
            text=True,
            env=env or self.env,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"modelyard {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def push(self, package: Path, model: str) -> str:
        """`modelyard push`; returns the version id."""
        env = {**self.env, "MODELYARD_API_TOKEN": self.token}
        out = self.cli("push", str(package), model, "--api", self.url, env=env)
        return out.split(model + ":", 1)[1].split()[0]

    def stop(self) -> None:
        """SIGINT (the engine stops its instances), then make sure no worker outlives it."""
        if self.process is None:
            return
        # Taken first: the workers run in sessions of their own, and are orphans once it exits.
        family = descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in family:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.process = None

    def __enter__(self) -> ModelyardServer:  # noqa: PYI034 - returns self, started
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU ticks used so far, user + system), from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The fields after the command's closing parenthesis: state ppid pgrp session ...
            # utime (11) stime (12).
            fields = stat.read_text().rpartition(")")[2].split()
            table[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
    return table


def descendants(root: int, table: dict[int, tuple[int, int]] | None = None) -> list[int]:
    """The live processes below `root`: children, grandchildren, ..."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in (table or process_table()).items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by `root` and its live descendants.

    The whole tree, so that a server's workers count (ours run theirs in sessions of their own;
    coglet's Rust server runs a Python worker): everything a server spends, wherever.
    """
    table = process_table()
    ticks = sum(table.get(pid, (0, 0))[1] for pid in [root, *descendants(root, table)])
    return ticks / os.sysconf("SC_CLK_TCK")


def _modelyard() -> str:
    return shutil.which("modelyard") or str(Path(sys.executable).parent / "modelyard")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("REPLICATE_API_TOKEN",)}
