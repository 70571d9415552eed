"""The worker's sandbox (runtime/sandbox.py) and its output files (runtime/outputs.py), on real
bubblewrap and real workers: what a model sees and can hand back, and what it leaves behind."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from modelyard.runtime import sandbox
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import Done, OutputFile
from modelyard.runtime.local import LocalModel
from modelyard.runtime.sandbox import Limits

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        sandbox.unavailable_reason() is not None,
        reason=f"no sandbox here: {sandbox.unavailable_reason()}",
    ),
]

PREDICTOR = """
import os, subprocess, sys, time
from typing import Any
from cog import BasePredictor, Input, Path

class Predictor(BasePredictor):
    def predict(self, action: str, target: str = "") -> Any:
        if action == "write-tmp":
            path = Path("/tmp/out.txt"); path.write_text("made inside"); return path
        if action == "write-home":
            path = Path(os.path.expanduser("~/out.txt")); path.write_text("home"); return path
        if action == "link":
            os.symlink(target, "/tmp/link"); return Path("/tmp/link")
        if action == "link-folder":
            os.symlink(target, "/tmp/folder"); return Path("/tmp/folder/passwd")
        if action == "system-file":
            return Path(target)
        if action == "package-file":
            return Path("shipped.txt")
        if action == "read":
            try:
                return "ok: " + open(target).read()
            except OSError as exc:
                return "refused: " + type(exc).__name__
        if action == "daemon":
            if os.fork() == 0:
                os.setsid()
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", target])
                os._exit(0)
            os.wait()
            return "forked"
        return "?"
"""


@pytest.fixture
def package(tmp_path: Path) -> Path:
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / "cog.yaml").write_text(
        'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'
    )
    (folder / "predict.py").write_text(textwrap.dedent(PREDICTOR))
    (folder / "shipped.txt").write_text("from the package")
    return folder


@pytest_asyncio.fixture(loop_scope="session")
async def model(package: Path, env_builder: EnvironmentBuilder) -> AsyncIterator[LocalModel]:
    made = LocalModel(package, builder=env_builder, sandbox=True, limits=Limits(output=1 << 20))
    result = await made.start()
    assert result.status == "succeeded", result.error
    yield made
    await made.stop()


async def run(model: LocalModel, **inputs: Any) -> Done:
    events = [event async for event in model.predict(model.validate(inputs))]
    done = events[-1]
    assert isinstance(done, Done)
    return done


async def test_an_output_in_tmp_or_home_is_moved_out_of_the_workers_reach(
    model: LocalModel,
) -> None:
    assert model.sandbox is not None
    for action, text in (("write-tmp", "made inside"), ("write-home", "home")):
        done = await run(model, action=action)
        assert done.status == "succeeded", done.error
        assert isinstance(done.output, OutputFile)
        assert done.output.path.is_relative_to(model.sandbox.outputs)
        assert done.output.path.read_text() == text


async def test_a_link_is_not_handed_back(model: LocalModel) -> None:
    """Inside, /etc/passwd is the sandbox's own; read by the server, it would be the host's."""
    host = Path("/etc/passwd").read_bytes()
    done = await run(model, action="link", target="/etc/passwd")
    assert done.status == "failed"
    assert done.error == "The output file 'link' is not a regular file"
    assert Path("/etc/passwd").read_bytes() == host  # not moved either


async def test_a_linked_folder_is_not_followed(model: LocalModel, tmp_path: Path) -> None:
    done = await run(model, action="link-folder", target="/etc")
    assert done.status == "failed"
    assert done.error == "The output file's folder 'folder' is a link or missing"


async def test_a_file_outside_the_writable_folders_is_refused(
    model: LocalModel, tmp_path: Path
) -> None:
    done = await run(model, action="system-file", target="/etc/passwd")
    assert done.status == "failed"
    assert done.error is not None and done.error.startswith("The output file /etc/passwd is not")
    shipped = await run(model, action="package-file")
    assert shipped.status == "succeeded", shipped.error
    assert isinstance(shipped.output, OutputFile)
    assert shipped.output.path.read_text() == "from the package"


async def test_the_worker_sees_none_of_the_servers_files(model: LocalModel, tmp_path: Path) -> None:
    private = tmp_path / "private.txt"
    private.write_text("private")
    assert (await run(model, action="read", target=str(private))).output == (
        "refused: FileNotFoundError"
    )
    home_file = Path.home() / ".bash_history"
    if home_file.exists():
        assert str((await run(model, action="read", target=str(home_file))).output).startswith(
            "refused:"
        )


async def test_a_daemon_dies_when_the_instance_stops(
    package: Path, env_builder: EnvironmentBuilder
) -> None:
    marker = f"sandbox-daemon-{os.getpid()}-{id(package)}"
    for sandboxed in (True, False):
        made = LocalModel(package, builder=env_builder, sandbox=sandboxed)
        await made.start()
        try:
            assert (await run(made, action="daemon", target=marker)).output == "forked"
            assert _running(marker) if sandboxed else True
        finally:
            await made.stop()
        if sandboxed:  # its PID namespace went with the worker
            await _gone(marker)
    # Without the sandbox, a daemon in a session of its own survives: docs/security.md says so.
    for pid in _running(marker):
        os.kill(pid, 9)


def _running(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def _gone(marker: str) -> None:
    for _ in range(200):
        if not _running(marker):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{marker} is still running: {_running(marker)}")


async def test_the_command_shows_no_data_folder(tmp_path: Path, package: Path) -> None:
    spec = sandbox.SandboxSpec(tmp_path / "instance")
    spec.prepare()
    python = Path(os.path.realpath(sys.executable))
    argv = sandbox.command(
        spec,
        python=python,
        package_dir=package,
        worker_paths=[],
        limits=None,
        environment={"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"},
    )
    shown = {argv[i + 2] for i, arg in enumerate(argv) if arg.endswith(("bind-try", "bind"))}
    assert str(package) in shown and "/tmp" in shown and sandbox.HOME_INSIDE in shown
    assert str(Path.home()) not in shown and "/" not in shown
    assert not any(str(path).startswith(str(spec.root / "outputs")) for path in shown)
    assert json.dumps(sandbox.environment({"AWS_SECRET_ACCESS_KEY": "x", "LANG": "C.UTF-8"})) == (
        json.dumps(
            {
                "LANG": "C.UTF-8",
                "HOME": "/home/model",
                "USER": "model",
                "LOGNAME": "model",
                "TMPDIR": "/tmp",
                "PATH": "/usr/local/bin:/usr/bin:/bin",
            }
        )
    )
