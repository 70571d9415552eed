"""Issue 13: a pushed model is a hostile tenant. On a live server (sandbox on, the default), it
cannot read the server's key, its data folder or another account's blob, nor write into its own
package or environment; it can write to /tmp and its home and reach the network. What it starts
dies with its instance, and with `serve`, whatever signal ends `serve`.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from live import PACKAGES, LiveServer, Tls, serving, workers
from predicting import eventually, start, wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    """A server of this module's own that shows its workers nothing of the tests' folders."""
    with serving(tmp_path_factory, tls, "sandboxed", share=False) as live:
        yield live


def snoop(server: LiveServer, version: str, action: str, target: str = "") -> str:
    with server.http() as client:
        created = start(client, version, action=action, target=target)
        done = wait_for(client, created["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    return str(done["output"])


@pytest.fixture(scope="module")
def snooper(server: LiveServer) -> str:
    return server.push(PACKAGES / "snoop", "admin/snoop")


def test_a_model_cannot_read_the_servers_key_or_list_its_data_folder(
    server: LiveServer, snooper: str
) -> None:
    key = server.data_dir / "secret.key"  # made when first needed; a canary beside it
    canary = server.data_dir / "canary.txt"
    canary.write_text("the data folder")
    for path in (key, canary):
        assert snoop(server, snooper, "read", str(path)).startswith("refused: FileNotFoundError")
    # The data folder shows only the path to the model's own package (where it is mounted).
    assert snoop(server, snooper, "list", str(server.data_dir)) == 'ok: ["packages"]'
    home_canary = Path.home() / f".modelyard-canary-{uuid.uuid4().hex}"
    home_canary.write_text("the server's home")
    try:  # only the paths to what is mounted (the interpreter, the environment) show there
        listed = json.loads(snoop(server, snooper, "list", str(Path.home())).removeprefix("ok: "))
        assert home_canary.name not in listed
        assert snoop(server, snooper, "read", str(home_canary)).startswith("refused:")
    finally:
        home_canary.unlink()
    database = server.data_dir / "modelyard.db"
    assert snoop(server, snooper, "read", str(database)).startswith("refused:")


def test_a_model_cannot_read_another_accounts_upload(server: LiveServer, snooper: str) -> None:
    with server.http() as client:
        uploaded = client.post(
            "/v1/files", files={"content": ("private.txt", b"the other tenant's secret")}
        )
        assert uploaded.status_code == 201, uploaded.text
    blobs = [path for path in (server.data_dir / "blobs").rglob("*") if path.is_file()]
    secret = next(p for p in blobs if p.read_bytes() == b"the other tenant's secret")
    assert snoop(server, snooper, "read", str(secret)).startswith("refused:")
    assert snoop(server, snooper, "list", str(server.data_dir / "blobs")).startswith(
        "refused: FileNotFoundError"
    )


def test_a_model_cannot_write_into_its_package_or_environment(
    server: LiveServer, snooper: str
) -> None:
    package = json.loads(snoop(server, snooper, "env").removeprefix("ok: "))
    venv = package["VIRTUAL_ENV"]
    refused = snoop(server, snooper, "write", f"{venv}/planted.py")
    assert refused.startswith("refused:") and "Read-only file system" in refused
    where = snoop(server, snooper, "write", "planted.txt")  # its package is its cwd
    assert where.startswith("refused:") and "Read-only file system" in where


def test_a_model_gets_no_server_secrets_in_its_environment(
    server: LiveServer, snooper: str
) -> None:
    variables = json.loads(snoop(server, snooper, "env").removeprefix("ok: "))
    assert variables["HOME"] == "/home/model"
    assert not any(name.startswith(("MODELYARD_API", "REPLICATE", "AWS_")) for name in variables)
    identity = json.loads(snoop(server, snooper, "whoami").removeprefix("ok: "))
    assert identity["uid"] == 65534 and identity["gid"] == 65534


def test_tmp_and_home_are_writable_and_the_network_works(server: LiveServer, snooper: str) -> None:
    assert snoop(server, snooper, "write", "/tmp/scratch.txt") == "ok: wrote /tmp/scratch.txt"
    assert snoop(server, snooper, "write", "/home/model/notes.txt").startswith("ok:")
    with _http_server(b"hello from loopback") as url:
        assert snoop(server, snooper, "fetch", url) == "ok: hello from loopback"


# --- processes --------------------------------------------------------------------------------


def leftovers(marker: str, server: LiveServer | None = None) -> list[int]:
    """Pids whose command line holds `marker`, or (with `server`) workers of its packages."""
    root = str(server.data_dir.resolve()).encode() if server is not None else None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state == b"Z":  # a zombie runs nothing
            continue
        worker = root is not None and root in cmdline and b"modelyard_worker" in cmdline
        if marker.encode() in cmdline or worker:
            found.append(int(entry.name))
    return found


def test_a_double_fork_dies_with_the_instance(
    tmp_path_factory: pytest.TempPathFactory, tls: Tls
) -> None:
    marker = f"forker-{uuid.uuid4().hex}"
    with serving(tmp_path_factory, tls, "forker", "--idle-timeout", "1") as live:
        version = live.push(PACKAGES / "forker", "admin/forker")
        with live.http() as client:
            created = start(client, version, mode="daemon", marker=marker)
            done = wait_for(client, created["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded", done
        assert leftovers(marker), "the sleeper was not started"
        # Idle for a second, the instance stops: what its model started goes with it.
        eventually(lambda: not leftovers(marker, live), f"no process of {marker} left")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_stuck_worker_dies_with_serve(
    tmp_path_factory: pytest.TempPathFactory, tls: Tls, how: signal.Signals
) -> None:
    live = LiveServer(data_dir=tmp_path_factory.mktemp("stuck"), tls=tls).start()
    marker = f"stuck-{uuid.uuid4().hex}"
    try:
        version = live.push(PACKAGES / "forker", "admin/forker")
        with live.http() as client:
            created = start(client, version, mode="hang", marker=marker)
            eventually(
                lambda: "hanging" in (client.get(f"/v1/predictions/{created['id']}").json()
                                      ["logs"] or ""),
                "the prediction to hang",
            )  # fmt: skip
        assert leftovers(marker) and workers(live)
        assert live.process is not None
        live.process.send_signal(how)
        live.process.wait(timeout=60)
        eventually(lambda: not leftovers(marker, live) and not workers(live), "no process left")
    finally:
        live.kill()


# --- helpers ----------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


class _contextserver:
    def __init__(self, body: bytes) -> None:
        handler = type("Handler", (_Handler,), {"body": body})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _http_server(body: bytes) -> _contextserver:
    return _contextserver(body)


# --- serve without a sandbox ------------------------------------------------------------------


def test_serve_refuses_to_start_where_bubblewrap_is_missing(tmp_path: Path) -> None:
    modelyard = Path(sys.executable).parent / "modelyard"
    bare = tmp_path / "bin"  # a PATH with python, and no bwrap
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    result = subprocess.run(
        [str(modelyard), "serve", "--data-dir", str(tmp_path / "data"), "--port", "1"],
        env={**os.environ, "PATH": str(bare)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: cannot sandbox model workers: bubblewrap (bwrap) is not installed; install "
        "bubblewrap (apt-get install bubblewrap) or pass --no-sandbox"
    )


def test_serve_says_loudly_that_it_runs_without_a_sandbox(
    tmp_path_factory: pytest.TempPathFactory, tls: Tls
) -> None:
    marker = f"unboxed-{uuid.uuid4().hex}"
    with serving(tmp_path_factory, tls, "unboxed", "--no-sandbox") as live:
        assert "WARNING: model workers run WITHOUT a sandbox" in live.logs()
        version = live.push(PACKAGES / "snoop", "admin/snoop")
        canary = live.data_dir / "canary.txt"
        canary.write_text("visible")
        assert snoop(live, version, "read", str(canary)) == "ok: visible"  # what it gives up
        forker = live.push(PACKAGES / "forker", "admin/forker")
        with live.http() as client:
            created = start(client, forker, mode="hang", marker=marker)
            eventually(lambda: workers(live), "the worker to start")
        assert live.process is not None
        live.process.kill()  # SIGKILL: the worker still dies with serve (PR_SET_PDEATHSIG)
        live.process.wait(timeout=60)
        eventually(lambda: not workers(live), "the worker to die")
        _ = created
    for pid in leftovers(marker):  # the double-forked sleeper in its own session survives
        os.kill(pid, signal.SIGKILL)
