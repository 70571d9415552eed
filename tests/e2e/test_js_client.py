"""The official JavaScript client (npm `replicate` 1.4.0) against a live server, under `node --test`.

The tests themselves are `tests/e2e/js/*.test.mjs`; this module starts the server (the `server`
fixture), pushes the models they use and runs each test file with Node's built-in test runner, one
pytest test per file so a failure names its file. Node trusts the test CA through
`NODE_EXTRA_CA_CERTS`, which fetch reads at startup, so the client stays unmodified.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from live import LiveServer, fixture_package

JS = Path(__file__).parent / "js"
TEST_FILES = sorted(JS.glob("*.test.mjs"))
# node's own per-test limit; a cold boot builds the shared environment once, so allow for it.
NODE_TEST_TIMEOUT_MS = 240_000
FILE_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the pinned client installed (fails loudly rather than skipping)."""
    found = shutil.which("node")
    if found is None:
        pytest.fail(
            "node is not on PATH: install Node.js 20 or newer to run the JavaScript e2e tests"
        )
    if not (JS / "node_modules" / "replicate" / "package.json").is_file():
        pytest.fail(
            "tests/e2e/js/node_modules is missing: install the pinned client with\n"
            "    (cd tests/e2e/js && npm ci --no-audit --no-fund)\n"
            "(.ci/run does this)"
        )
    return found


@pytest.fixture(scope="module")
def js_env(server: LiveServer, hello: str) -> dict[str, str]:
    """The environment the .mjs files read: where the server is and what was pushed there."""
    versions = {
        "MODELYARD_HELLO_VERSION": hello,
        "MODELYARD_TEXT_FILE_VERSION": server.push(
            fixture_package("output_path"), "admin/text-file"
        ),
        "MODELYARD_READ_FILE_VERSION": server.push(
            fixture_package("input_path"), "admin/read-file"
        ),
        "MODELYARD_ECHO_VERSION": server.push(fixture_package("output_str"), "admin/echo"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "NODE_"))}
    return {
        **env,
        **versions,
        "MODELYARD_URL": server.url,
        "MODELYARD_TOKEN": server.token,
        "NODE_EXTRA_CA_CERTS": str(server.tls.ca_file),
    }


@pytest.mark.timeout(FILE_TIMEOUT_S + 60)
@pytest.mark.parametrize("test_file", TEST_FILES, ids=[f.name for f in TEST_FILES])
def test_js_client(node: str, js_env: dict[str, str], server: LiveServer, test_file: Path) -> None:
    result = subprocess.run(
        [
            node,
            "--test",
            "--test-reporter=spec",
            f"--test-timeout={NODE_TEST_TIMEOUT_MS}",
            test_file.name,
        ],
        cwd=JS,
        check=False,
        env=js_env,
        capture_output=True,
        text=True,
        timeout=FILE_TIMEOUT_S,
    )
    if result.returncode != 0:
        pytest.fail(
            f"node --test {test_file.name} failed (exit {result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}\n--- server log (tail) ---\n{server.logs()[-6000:]}",
            pytrace=False,
        )
