"""A cold boot's phases through a live server: the prediction that booted an instance shows
`boot_environment_time`, `boot_import_time` and `boot_setup_time` in its metrics and a `Boot:`
line in its logs; later ones on the same instance do not. After scale to zero, the next
prediction boots again (from the version's warm template while it is kept), and once the
template's idle timeout has passed too, no worker process of the server is left.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from live import LiveServer, Tls, fixture_package
from predicting import eventually, start, wait_for

PHASES = {"boot_environment_time", "boot_import_time", "boot_setup_time"}
IDLE = 2.0  # seconds: instances, and then templates, go after this


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    live = LiveServer(
        data_dir=tmp_path_factory.mktemp("boot-phases"),
        tls=tls,
        extra_args=["--idle-timeout", str(IDLE)],
    ).start()
    try:
        yield live
    finally:
        live.stop()


def workers_of(pid: int) -> list[int]:
    """The worker processes (templates included) below `pid`."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                text = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(text[text.rfind(")") + 2 :].split()[1])

    def below(child: int) -> bool:
        while child in parents and child != 1:
            child = parents[child]
            if child == pid:
                return True
        return False

    found = []
    for child in parents:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"modelyard_worker" in command and below(child):
            found.append(child)
    return found


def run(server: LiveServer, version: str) -> dict[str, object]:
    with server.http() as api:
        prediction = start(api, version, name="boot")
        done = wait_for(api, prediction["id"], {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded", done
    return done


def test_boot_phases_in_metrics_and_logs_and_everything_freed(server: LiveServer) -> None:
    version = server.push(fixture_package("output_str"), "admin/booting")
    first = run(server, version)
    assert PHASES <= set(first["metrics"]), first["metrics"]
    assert all(first["metrics"][name] >= 0 for name in PHASES)
    assert "Boot: environment " in first["logs"]

    second = run(server, version)  # the same instance, warm: no boot
    assert not PHASES & set(second["metrics"]), second["metrics"]

    assert server.process is not None
    pid = server.process.pid
    # Scale to zero, then the template's idle timeout: nothing of the model is left running.
    eventually(lambda: not workers_of(pid), "every worker and template to stop")

    third = run(server, version)  # boots again after scale to zero
    assert PHASES <= set(third["metrics"]), third["metrics"]
    assert "Boot: environment " in third["logs"]
