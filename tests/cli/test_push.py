"""`modelyard push`, run as a subprocess against a small HTTP server on loopback that plays the
server's side of the contract in docs/push.md (the real endpoint is tested with the API)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_cli import assert_one_line_error, modelyard_command

from modelyard.cli import push
from modelyard.cogspec.source import MAX_AST_DEPTH
from modelyard.runtime.package import pack_package

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello-world"
TOKEN = "r8_test_token"
CLEARED = ("MODELYARD_API_URL", "REPLICATE_BASE_URL", "MODELYARD_API_TOKEN", "REPLICATE_API_TOKEN")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    sha256: str
    size: int


@dataclass
class FakeApi:
    """What the test server answers (`reply`) and what it was sent (`received`)."""

    url: str = ""
    reply: tuple[int, str, bytes] = (201, "application/json", b"")
    received: list[Received] = field(default_factory=list)
    early: bool = False  # answer without reading the body, then close (a server's early 413)

    def version(self, status: int, sha256: str) -> None:
        body = {
            "id": sha256,
            "created_at": "2025-01-01T00:00:00.000000Z",
            "cog_version": "0.14.0",
            "openapi_schema": {"openapi": "3.0.2"},
        }
        self.reply = (status, "application/json", json.dumps(body).encode())

    def problem(self, status: int, detail: str) -> None:
        body = {"title": "error", "detail": detail, "status": status}
        self.reply = (status, "application/problem+json", json.dumps(body).encode())


@pytest.fixture
def api() -> Iterator[FakeApi]:
    state = FakeApi()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if state.early:
                self.close_connection = True
            length = int(self.headers["Content-Length"])
            body = self.rfile.read(min(length, 1024) if state.early else length)
            state.received.append(
                Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    hashlib.sha256(body).hexdigest(),
                    len(body),
                )
            )
            status, content_type, payload = state.reply
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def run_push(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in CLEARED and "proxy" not in k.lower()}
    return subprocess.run(
        [*modelyard_command(), "push", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, **(env or {})},
    )


def assert_error_after_upload(
    proc: subprocess.CompletedProcess[str], expected: str, *, prefix: bool = False
) -> None:
    """Exit 1, nothing on stdout, and stderr's last line is its one error line: `expected` (or
    starting with it); the lines before it are the packing and upload notes."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(expected) if prefix else lines[-1] == expected, proc.stderr
    assert sum(line.startswith("Error:") for line in lines) == 1
    assert "Traceback" not in proc.stderr


# --- success --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (201, "(a new version)"),
        (200, "(already pushed: the same content, same version)"),
    ],
)
def test_push_uploads_the_archive(api: FakeApi, status: int, state: str) -> None:
    packed = pack_package(HELLO)
    api.version(status, packed.sha256)
    proc = run_push(HELLO, "me/hello", "--api", api.url, "--token", TOKEN)
    assert proc.returncode == 0, proc.stderr
    [request] = api.received
    assert request.path == "/v1/models/me/hello/versions"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/gzip"
    assert request.headers["content-length"] == str(len(packed.data))
    assert (request.sha256, request.size) == (packed.sha256, len(packed.data))
    assert proc.stdout.splitlines() == [
        f"Pushed me/hello:{packed.sha256} {state}",
        (
            f'Run it: replicate.run("me/hello:{packed.sha256}", input={{}}) '
            f"with REPLICATE_BASE_URL={api.url}"
        ),
    ]
    assert f"Packed 2 files ({packed.size} bytes), sha256 {packed.sha256}" in proc.stderr
    assert f"Uploaded {len(packed.data)} bytes of {len(packed.data)} bytes" in proc.stderr


def test_url_and_token_from_the_environment(api: FakeApi) -> None:
    api.version(201, "abc")
    proc = run_push(
        HELLO,
        "me/hello",
        env={
            "REPLICATE_BASE_URL": "http://127.0.0.1:9/v1",  # loses to MODELYARD_API_URL
            "MODELYARD_API_URL": f"{api.url}/v1/",  # the JavaScript client's form works too
            "REPLICATE_API_TOKEN": "from-replicate",
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert api.received[0].path == "/v1/models/me/hello/versions"
    assert api.received[0].headers["authorization"] == "Bearer from-replicate"
    assert "Pushed me/hello:abc (a new version)" in proc.stdout


def test_settings_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    assert push.api_base_url() == "http://127.0.0.1:8000"
    assert push.api_token() is None
    monkeypatch.setenv("REPLICATE_BASE_URL", "https://r.example/")
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r")
    assert (push.api_base_url(), push.api_token()) == ("https://r.example", "r")
    monkeypatch.setenv("MODELYARD_API_URL", "https://m.example/v1")
    monkeypatch.setenv("MODELYARD_API_TOKEN", "m")
    assert (push.api_base_url(), push.api_token()) == ("https://m.example", "m")
    assert (push.api_base_url("http://o:1"), push.api_token("o")) == ("http://o:1", "o")


def test_progress_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    progress = push._Progress(3_000_000, live=True)
    for sent in (1_000_000, 3_000_000):
        progress(sent)
    progress.finish()
    err = capsys.readouterr().err
    assert err.startswith("\rUploading 1.0 MB / 3.0 MB (33%)")
    assert err.endswith("\rUploading 3.0 MB / 3.0 MB (100%)\n")


# --- server errors --------------------------------------------------------------------------


def test_problem_detail_is_one_error_line(api: FakeApi) -> None:
    api.problem(404, "The model me/nope does not exist")
    proc = run_push(HELLO, "me/nope", "--api", api.url, "--token", TOKEN)
    assert_error_after_upload(proc, "Error: The model me/nope does not exist (HTTP 404)")


def test_unauthenticated_without_a_token_says_how_to_give_one(api: FakeApi) -> None:
    api.problem(401, "You did not pass a valid authentication token")
    proc = run_push(HELLO, "me/hello", "--api", api.url)
    assert "authorization" not in api.received[0].headers
    assert_error_after_upload(
        proc,
        "Error: You did not pass a valid authentication token (HTTP 401); "
        "no token was given: set REPLICATE_API_TOKEN (or MODELYARD_API_TOKEN), or pass --token",
    )


def test_an_answer_that_is_not_problem_json(api: FakeApi) -> None:
    api.reply = (502, "text/html", b"<html>\n<b>bad gateway</b>\n</html>")
    proc = run_push(HELLO, "me/hello", "--api", api.url, "--token", TOKEN)
    assert_error_after_upload(
        proc,
        f"Error: HTTP 502 Bad Gateway from {api.url}/v1/models/me/hello/versions: "
        "<html> <b>bad gateway</b> </html>",
    )
    api.reply = (201, "application/json", b'{"no": "id"}')
    proc = run_push(HELLO, "me/hello", "--api", api.url, "--token", TOKEN)
    assert proc.returncode == 1 and "is not a version (HTTP 201)" in proc.stderr


def test_unreachable_server() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = run_push(HELLO, "me/hello", "--api", f"http://127.0.0.1:{port}", "--token", TOKEN)
    assert_error_after_upload(
        proc,
        f"Error: cannot reach http://127.0.0.1:{port}/v1/models/me/hello/versions: ",
        prefix=True,
    )


# --- failures before any request ------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"predict.py": "x = 1\n"}, "cog.yaml"),
        (
            {"cog.yaml": "bulid:\n  python_version: '3.11'\npredict: predict.py:P\n"},
            "unknown key 'bulid'",
        ),
        ({"cog.yaml": "predict: predict.py:Predictor\n", "predict.py": "x = 1\n"}, "Predictor"),
    ],
)
def test_invalid_package_fails_before_the_network(
    api: FakeApi, tmp_path: Path, files: dict[str, str], fragment: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    proc = run_push(tmp_path, "me/hello", "--api", api.url, "--token", TOKEN)
    assert_one_line_error(proc, fragment)
    assert api.received == []


PREDICTOR = "class Predictor:\n    def predict(self) -> str:\n        return 'hi'\n"
ALIAS_BOMB = "predict: predict.py:Predictor\n? [&a [x,x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]]\n: 1\n"


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"cog.yaml": ALIAS_BOMB}, "cog.yaml:2: a mapping key must be a plain value"),
        (
            {
                "cog.yaml": "predict: predict.py:Predictor\nweights:\n  - name: &a w\n    target: *a\n"
                "    source: *a\n"
            },
            "cog.yaml:3: YAML anchors and aliases",
        ),
        (
            {
                "cog.yaml": "predict: predict.py:Predictor\nenvironment: "
                + "[" * 100_000
                + "]" * 100_000
            },
            "cog.yaml:2: nested more than 32 levels deep",
        ),
        (
            {
                "cog.yaml": "predict: predict.py:Predictor\n",
                "predict.py": PREDICTOR + "X = " + "+".join(["1"] * 200_000) + "\n",
            },
            f"predict.py: an expression or block is nested more than {MAX_AST_DEPTH} levels deep",
        ),
        (
            {
                "cog.yaml": "predict: predict.py:Predictor\nbuild:\n  python_requirements: /etc/passwd\n"
            },
            "cog.yaml:3: 'build.python_requirements' must be a path inside the package",
        ),
        (
            {"cog.yaml": 'predict: "/etc/passwd:Predictor"\n'},
            "cog.yaml:1: 'predict' must name a file inside the package",
        ),
        (
            {
                "cog.yaml": "predict: predict.py:Predictor\nbuild:\n  python_requirements: r.txt\n",
                "r.txt": "numpy\n-r /etc/passwd\n",
            },
            "r.txt: the requirement '/etc/passwd' must be a path inside the package",
        ),
    ],
    ids=[
        "alias-bomb",
        "aliases-in-weights",
        "nested-10^5",
        "200000-terms",
        "requirements-outside",
        "predictor-outside",
        "requirement-line-outside",
    ],
)
def test_hostile_package_fails_before_the_network_in_one_line(
    api: FakeApi, tmp_path: Path, files: dict[str, str], fragment: str
) -> None:
    (tmp_path / "predict.py").write_text(PREDICTOR)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    proc = run_push(tmp_path, "me/hello", "--api", api.url, "--token", TOKEN)
    assert_one_line_error(proc, fragment)
    assert len(proc.stderr) < 600
    assert api.received == []


@pytest.mark.parametrize("early", [False, True], ids=["after-the-body", "before-the-body"])
def test_a_package_refused_as_too_large_is_one_error_line(api: FakeApi, early: bool) -> None:
    """The server's 413, whether it read the body or answered (and closed) before."""
    api.early = early
    api.problem(
        413, "The package is too large: the archive holds more than 20000 files and folders."
    )
    proc = run_push(HELLO, "me/hello", "--api", api.url, "--token", TOKEN)
    assert_error_after_upload(
        proc,
        "Error: The package is too large: the archive holds more "
        "than 20000 files and folders. (HTTP 413)",
    )


def test_a_big_package_is_streamed_from_disk(api: FakeApi, tmp_path: Path) -> None:
    """`modelyard push` of a 96 MiB package peaks at about the memory of pushing a tiny one: the
    archive is written to a temporary file and sent from it a chunk at a time."""
    big = tmp_path / "big"
    shutil.copytree(HELLO, big)
    with open(big / "weights.bin", "wb") as out:
        out.writelines(os.urandom(1 << 20) for _ in range(96))
    api.version(201, "abc")
    small_peak, big_peak = (peak_rss_of_push(folder, api) for folder in (HELLO, big))
    assert api.received[1].size > 96 << 20
    assert big_peak - small_peak < 32 << 20, (small_peak, big_peak)


def peak_rss_of_push(folder: Path, api: FakeApi) -> int:
    """The peak resident memory, in bytes, of a `modelyard push` of `folder`."""
    clean = {k: v for k, v in os.environ.items() if k not in CLEARED and "proxy" not in k.lower()}
    process = subprocess.Popen(
        [*modelyard_command(), "push", str(folder), "me/big", "--api", api.url, "--token", TOKEN],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean,
    )
    deadline = time.monotonic() + 120
    while True:  # wait4, unlike Popen.wait, gives the child's resource usage
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("modelyard push did not end in 120 s")
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0
    return usage.ru_maxrss * 1024


@pytest.mark.parametrize("model", ["hello", "me/hello:abc", "me/", "a/b/c"])
def test_bad_model_name(api: FakeApi, model: str) -> None:
    proc = run_push(HELLO, model, "--api", api.url)
    assert_one_line_error(proc, "is not a model name: expected owner/name")
    assert api.received == []


def test_missing_folder(api: FakeApi, tmp_path: Path) -> None:
    proc = run_push(tmp_path / "nope", "me/hello", "--api", api.url)
    assert_one_line_error(proc, "nope is not a folder")
