"""What a new user meets first in the CLI (issue 17): `--version`, `serve` on a port in use, and
`predict` of an object output that holds files beside other fields."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
from test_cli import assert_one_line_error, modelyard_command, run

from modelyard import __version__

OBJECT_WITH_FILES = """
import tempfile

from cog import BaseModel, BasePredictor, Path


class Output(BaseModel):
    score: float
    files: list[Path]


class Predictor(BasePredictor):
    def predict(self, n: int = 2) -> Output:
        written = []
        folder = tempfile.mkdtemp()
        for i in range(n):
            path = Path(folder) / f"{i}.txt"
            path.write_text(f"file {i}")
            written.append(path)
        return Output(score=0.75, files=written)
"""


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"modelyard {__version__}\n"


def test_serve_on_a_port_in_use_says_so_before_creating_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / "data"
        proc = subprocess.run(
            [*modelyard_command(), "serve", "--port", str(port), "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert_one_line_error(
        proc,
        f"port {port} on 127.0.0.1: address already in use (another modelyard serve?): "
        "pick another with --port",
    )
    assert not data.exists()  # no account, token or password was made


def test_predict_of_an_object_prints_it_with_the_paths_of_its_files(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "cog.yaml").write_text(
        'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'
    )
    (folder / "predict.py").write_text(OBJECT_WITH_FILES)
    out = tmp_path / "out"
    proc = run("predict", folder, "-o", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = [str(out / "output.files.0.txt"), str(out / "output.files.1.txt")]
    assert json.loads(proc.stdout) == {"score": 0.75, "files": written}
    assert [Path(p).read_text() for p in written] == ["file 0", "file 1"]
    for path in written:
        assert f"Written output to {path}" in proc.stderr


def test_token_create_without_data_dir_uses_the_folder_serve_serves(tmp_path: Path) -> None:
    """The README's `serve --data-dir ./data`, then `token create` with no `--data-dir`: the
    token is made in ./data's database, and works against the running server."""
    env = {**os.environ, "MODELYARD_HOME": str(tmp_path / "home")}
    data = tmp_path / "data"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [*modelyard_command(), "serve", "--no-catalog", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        lines: list[str] = []
        while not any("serving at" in line for line in lines):
            line = server.stdout.readline()  # bounded: serve prints it or exits (EOF)
            assert line, "".join(lines)
            lines.append(line)
        made = subprocess.run(
            [*modelyard_command(), "token", "create"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        assert f"Using {data.resolve()}, the data folder of the last `modelyard serve`" in (
            made.stderr
        )
        headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/account", headers=headers)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not answer in 60 s"
                time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        assert answer.json()["username"] == "admin"
    finally:
        server.terminate()
        server.wait(timeout=30)
