"""`modelyard serve` on first start, and `modelyard token create|list|revoke`."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
from test_cli import modelyard_command, run

TOKEN = re.compile(r"r8_[A-Za-z0-9_-]+")


def test_first_start_creates_an_admin_and_prints_how_to_use_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    process = subprocess.Popen(
        [*modelyard_command(), "serve", "--data-dir", str(data), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        assert process.stdout is not None
        while not any("serving at" in line for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        output = "".join(lines)
        token = TOKEN.search(output).group(0)  # type: ignore[union-attr]
        assert f"REPLICATE_BASE_URL=http://127.0.0.1:{port}" in output
        answer = _get_when_up(f"http://127.0.0.1:{port}/v1/predictions", token)
        assert answer.status_code == 200 and answer.json()["results"] == []
        bad = httpx.get(f"http://127.0.0.1:{port}/v1/predictions", headers={"Authorization": "x"})
        assert bad.status_code == 401
        assert bad.json()["detail"] == "You did not pass a valid authentication token"
        password = re.search(r"with the password (\S+) ", output).group(1)  # type: ignore[union-attr]
        signed = httpx.post(f"http://127.0.0.1:{port}/signin",
                            data={"username": "admin", "password": password})  # fmt: skip
        assert signed.status_code == 303 and "modelyard_session" in signed.cookies
    finally:
        process.terminate()
        process.wait(timeout=20)
    again = run("token", "list", "--data-dir", data)  # the first start's token is listed
    assert again.returncode == 0 and "created on first start" in again.stdout


def test_tokens_are_created_listed_and_revoked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = run("token", "create", "--username", "carol", "--name", "ci", "--data-dir", data)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert TOKEN.fullmatch(token)
    listed = run("token", "list", "--username", "carol", "--data-dir", data)
    assert listed.returncode == 0 and "ci" in listed.stdout and "active" in listed.stdout
    token_id = listed.stdout.split()[0]
    revoked = run("token", "revoke", token_id, "--username", "carol", "--data-dir", data)
    assert revoked.returncode == 0 and "Revoked" in revoked.stdout
    assert "revoked" in run("token", "list", "--username", "carol", "--data-dir", data).stdout


def test_token_commands_fail_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for args in (
        ("token", "list", "--username", "nobody", "--data-dir", data),
        ("token", "revoke", "999", "--username", "nobody", "--data-dir", data),
    ):
        result = run(*args)
        assert result.returncode == 1
        assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("Error: ")
    not_a_number = run("token", "revoke", "abc", "--data-dir", data)
    assert not_a_number.returncode == 2 and "token_id" in not_a_number.stderr


def _get_when_up(url: str, token: str) -> httpx.Response:
    for _ in range(200):
        try:
            return httpx.get(url, headers={"Authorization": f"Bearer {token}"})
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never answered")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_reserved_usernames_are_refused(tmp_path: Path) -> None:
    for option in ("--admin", "--catalog-owner"):
        result = run("serve", option, "settings", "--data-dir", str(tmp_path / "data"))
        assert result.returncode == 1
        assert result.stderr.strip() == (
            "Error: the username 'settings' is reserved (a path of the API or the web pages)"
        )


def test_serve_refuses_bad_cluster_options_in_one_line(tmp_path: Path) -> None:
    """A bad `--gpus`, or a Ray head that does not answer: one line, exit 1, nothing written."""
    from typer.testing import CliRunner

    from modelyard.cli.main import app

    closed = free_port()  # nothing listens there
    for args, says in [
        (["--gpus", "0:t4,0:t4"], "Error: --gpus: GPU 0 is listed twice"),
        (["--backend", "ray", "--ray-address", f"127.0.0.1:{closed}"],
         f"Error: cannot reach the Ray head at 127.0.0.1:{closed}"),
        (["--backend", "ray", "--ray-address", "head"],
         "Error: --ray-address 'head' is not host:port"),
    ]:  # fmt: skip
        result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path), *args])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(says), result.output
        assert not (tmp_path / "modelyard.db").exists()
