"""A live `modelyard serve` for end-to-end tests: a real process on loopback, over https.

The server runs as a subprocess (so restart tests can kill it with SIGKILL and start it again on
the same data folder). TLS uses a throwaway CA from `trustme`: the official clients wrap only
`https:` output URLs in `FileOutput`, so the FileOutput experience needs https.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
import trustme

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PACKAGES = Path(__file__).parent / "packages"
START_TIMEOUT = 60.0
PORT_ATTEMPTS = 3


class _PortTaken(RuntimeError):
    """The server could not bind its port: something took it after `free_port` chose it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Tls:
    """A CA the tests trust and a certificate for 127.0.0.1 signed by it."""

    folder: Path
    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(self.key))
        cert.cert_chain_pems[0].write_to_path(str(self.cert))
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    @property
    def cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def key(self) -> Path:
        return self.folder / "server.key"

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@dataclass
class LiveServer:
    """`modelyard serve` on a free port with its own data folder; `token` is the admin's."""

    data_dir: Path
    tls: Tls
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    token: str = ""
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # over this process's environment
    log_dir: Path | None = None  # where the server's log goes (default: the data folder)
    # The tests' temporary folders (where their gate files are) shown to the sandboxed workers,
    # read-only: they hold the data folder too, so the sandbox's own tests turn this off.
    share_test_folders: bool = True

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.token:
            self.token = self.cli("token", "create", "--username", "admin").strip()
        # The port was free when it was picked, but another process (a test worker running beside
        # this one, an outgoing connection) may take it before the server binds: try another.
        for _attempt in range(PORT_ATTEMPTS - 1):
            try:
                return self._launch()
            except _PortTaken:
                self.port = free_port()
        return self._launch()

    def _shares(self) -> bool:
        return self.share_test_folders and "--no-sandbox" not in self.extra_args

    def _launch(self) -> LiveServer:
        self.log_path = (self.log_dir or self.data_dir) / f"server-{int(time.time() * 1000)}.log"
        args = [
            "serve",
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--ssl-certfile", str(self.tls.cert),
            "--ssl-keyfile", str(self.tls.key),
            *self.extra_args,
            *([] if "--catalog" in self.extra_args else ["--no-catalog"]),
            *(["--sandbox-share", str(self.data_dir.parent)] if self._shares() else []),
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [_modelyard(), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**_env(), **self.env},
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with self.http() as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    logs = self.logs()
                    if "address already in use" in logs.lower():
                        raise _PortTaken(logs)
                    raise RuntimeError(f"modelyard serve exited:\n{logs}")
                try:
                    if client.get("/v1/predictions").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"modelyard serve did not answer in {START_TIMEOUT} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine loses power."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> LiveServer:
        self.kill()
        return self.start()

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [_modelyard(), *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            env={**_env(), **self.env},
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"modelyard {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def push(self, package: Path, ref: str, token: str | None = None) -> str:
        """Push a package folder as a version of `ref`; returns the version id."""
        result = subprocess.run(
            [_modelyard(), "push", str(package), ref, "--api", self.url],
            capture_output=True,
            text=True,
            env={
                **_env(),
                **self.env,
                "MODELYARD_API_TOKEN": token or self.token,
                "SSL_CERT_FILE": str(self.tls.ca_file),
            },
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"push failed: {result.stderr}")
        return result.stdout.split(ref + ":", 1)[1].split()[0]

    def http(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client on the server with the admin's (or `token`'s) bearer token."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(
            base_url=self.url, headers=headers, verify=self.tls.context(), timeout=90, **kwargs
        )

    def replicate(self, token: str | None = None, **kwargs: Any) -> replicate.Client:
        """The official Python client, changed only in its base URL (and trusting our test CA:
        the client builds its own transport, so the CA goes in through `transport`)."""
        return replicate.Client(
            api_token=token or self.token,
            base_url=self.url,
            transport=httpx.HTTPTransport(verify=self.tls.context()),
            **kwargs,
        )


@dataclass
class Replica(LiveServer):
    """A LiveServer that counts as ready on any answer: replicas starting together on an
    empty database have no token yet (the admin is made by whichever starts first)."""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=self.url, verify=self.tls.context(), timeout=5) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"modelyard serve exited:\n{self.logs()}")
                try:
                    client.get("/v1/predictions")
                    return
                except httpx.TransportError:
                    time.sleep(0.1)
        raise RuntimeError(f"modelyard serve did not answer:\n{self.logs()}")


def _modelyard() -> str:
    found = shutil.which("modelyard") or str(Path(sys.executable).parent / "modelyard")
    return found


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REPLICATE_API_TOKEN", None)
    return env


def fixture_package(name: str) -> Path:
    """A Cog package from tests/fixtures (the runtime's fixtures)."""
    return ROOT / "tests" / "fixtures" / name


@contextmanager
def serving(
    factory: pytest.TempPathFactory, tls: Tls, name: str, *args: str, share: bool = True
) -> Iterator[LiveServer]:
    """A started server on a fresh data folder (`name` names it) with extra `serve` args
    (`share`: LiveServer.share_test_folders)."""
    live = LiveServer(
        data_dir=factory.mktemp(name), tls=tls, extra_args=list(args), share_test_folders=share
    ).start()
    try:
        yield live
    finally:
        live.stop()


def push_gated_setup(
    server: LiveServer, folder: Path, name: str, source: str = "slow_setup"
) -> tuple[str, Path]:
    """packages/`source` copied under `folder` and pushed as a fresh version of admin/`name`
    (so nothing has booted it yet); its setup waits until the test creates the returned gate."""
    package = folder / name
    shutil.copytree(PACKAGES / source, package)
    gate = folder / "gate"
    (package / "gate_path").write_text(str(gate))
    return server.push(package, f"admin/{name}"), gate


def workers(server: LiveServer) -> set[int]:
    """Pids of the worker processes running a package of this server."""
    root = str(server.data_dir.resolve())
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if os.path.basename(argv[0]) == b"bwrap":  # the sandbox around a worker, not one
                continue
            cmdline = b" ".join(argv)
            if b"modelyard_worker" in cmdline and os.readlink(entry / "cwd").startswith(root):
                found.add(int(entry.name))
        except OSError:  # gone while we looked
            continue
    return found
