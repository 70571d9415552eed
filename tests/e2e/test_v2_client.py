"""The v2 Python client (`replicate` 2.0.0b4, built by Stainless) against a live server.

v2 has the same import name as the 1.0.7 client the rest of the suite imports, so it lives in
its own virtual environment, `.venv-replicate2` (pinned by tests/e2e/py2/requirements.txt, made
by .ci/run), and each area of its surface runs as a subprocess of that environment's Python
(tests/e2e/py2/surface.py), one pytest test per area so that a failure names it. The client is
unmodified and configured only by its environment variables, as a user would.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from live import PACKAGES, ROOT, LiveServer, fixture_package
from test_models import store

from modelyard.api.jobs import hold_seconds
from modelyard.store.catalog import set_collection_models, upsert_collection
from modelyard.store.models import get_model

PY2 = Path(__file__).parent / "py2"
VENV = ROOT / ".venv-replicate2"
AREA_TIMEOUT_S = 300  # a cold boot builds a model's environment once; then seconds
SETUP_COMMAND = (
    "    python -m venv .venv-replicate2\n"
    "    .venv-replicate2/bin/pip install -r tests/e2e/py2/requirements.txt\n"
    "    cp tests/e2e/py2/requirements.txt .venv-replicate2/requirements.txt\n"
    "(.ci/run does this)"
)


@pytest.fixture(scope="module")
def python2() -> Path:
    """The v2 environment's Python; fails loudly (never skips) when it is missing or stale."""
    python = VENV / "bin" / "python"
    pinned = (PY2 / "requirements.txt").read_bytes()
    installed = VENV / "requirements.txt"
    if not python.is_file() or not installed.is_file():
        pytest.fail(f".venv-replicate2 is missing: make it from the repository root with\n"
                    f"{SETUP_COMMAND}")  # fmt: skip
    if installed.read_bytes() != pinned:
        pytest.fail(f".venv-replicate2 was made from an older tests/e2e/py2/requirements.txt: "
                    f"remove it and make it again with\n{SETUP_COMMAND}")  # fmt: skip
    return python


@pytest.fixture(scope="module")
def v2_env(
    server: LiveServer,
    hello: str,
    slow: str,
    ticker: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """What surface.py reads: the server, the admin's token, the test CA and the pushed models."""
    versions = {
        "MODELYARD_HELLO_VERSION": hello,
        "MODELYARD_SLOW_VERSION": slow,
        "MODELYARD_TICKER_VERSION": ticker,
        "MODELYARD_TEXT_FILE_VERSION": server.push(
            fixture_package("output_path"), "admin/text-file"
        ),
        "MODELYARD_TRAINER_VERSION": server.push(PACKAGES / "trainer", "admin/trainer"),
        # private, never run: a version that may be deleted (as on Replicate)
        "MODELYARD_DOOMED_VERSION": server.push(PACKAGES / "noop", "admin/v2-doomed"),
        "MODELYARD_READ_FILE_VERSION": server.push(
            fixture_package("input_path"), "admin/read-file"
        ),
        "MODELYARD_FRAMES_VERSION": server.push(
            fixture_package("output_iterator_path"), "admin/frames"
        ),
    }
    with store(server) as session:
        upsert_collection(session, "v2-things", "V2 things", "What the v2 client sees")
        hello_model = get_model(session, "admin", "hello")
        assert hello_model is not None
        set_collection_models(session, "v2-things", [hello_model.model.id])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "SSL_CERT"))}
    return {
        **env,
        **versions,
        "REPLICATE_BASE_URL": f"{server.url}/v1",
        "REPLICATE_API_TOKEN": server.token,
        "SSL_CERT_FILE": str(server.tls.ca_file),  # httpx's default client reads it
        # under the folder the sandboxed workers are shown (LiveServer.share_test_folders)
        "MODELYARD_GATES": str(tmp_path_factory.mktemp("v2-gates")),
    }


def v2(python2: Path, env: dict[str, str], server: LiveServer, area: str) -> None:
    """Run one area of surface.py; a failure shows its traceback and the server's log."""
    result = subprocess.run(
        [str(python2), str(PY2 / "surface.py"), area],
        env=env,
        capture_output=True,
        text=True,
        timeout=AREA_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0 or f"ok {area}" not in result.stdout:
        pytest.fail(
            f"v2 client, {area}: exit {result.returncode}\n{result.stdout}\n{result.stderr}\n"
            f"--- server log (tail) ---\n{server.logs()[-6000:]}",
            pytrace=False,
        )


AREAS = ["predictions", "models", "deployments", "trainings", "files", "collections",
         "hardware", "account", "webhooks", "search", "run", "use", "stream"]  # fmt: skip


@pytest.mark.timeout(AREA_TIMEOUT_S + 60)
@pytest.mark.parametrize("area", AREAS)
def test_v2_client(python2: Path, v2_env: dict[str, str], server: LiveServer, area: str) -> None:
    v2(python2, v2_env, server, area)


@pytest.mark.timeout(AREA_TIMEOUT_S + 60)
@pytest.mark.parametrize("area", ["run", "files"])
def test_a_base_url_without_v1(
    python2: Path, v2_env: dict[str, str], server: LiveServer, area: str
) -> None:
    """The API answers at the root too, so the `REPLICATE_BASE_URL` that `modelyard serve`
    prints (no `/v1`, as 1.0.7 wants it) serves v2 as well."""
    v2(python2, {**v2_env, "REPLICATE_BASE_URL": server.url}, server, area)


@pytest.mark.timeout(AREA_TIMEOUT_S + 60)
def test_run_slower_than_the_read_timeout_makes_one_prediction(
    python2: Path, v2_env: dict[str, str], server: LiveServer, http: httpx.Client
) -> None:
    """v2 retries a POST whose answer does not come within its read timeout (3 s here): the
    server answers `Prefer: wait` before it, so exactly one prediction exists afterwards."""
    tag = f"once-{uuid.uuid4().hex}"
    v2(python2, {**v2_env, "MODELYARD_TAG": tag}, server, "retries")
    made = [
        p for p in http.get("/v1/predictions").json()["results"] if p["input"].get("tag") == tag
    ]
    assert len(made) == 1 and made[0]["status"] == "succeeded", made


def test_prefer_wait_answers_before_the_stated_read_timeout(
    http: httpx.Client, slow: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With `x-stainless-read-timeout` the wait ends before it, the prediction still running
    (202, `starting`), and the answer tells the client not to retry the POST."""
    gate = tmp_path_factory.mktemp("v2-hold") / "gate"
    answer = http.post(
        "/v1/predictions",
        json={"version": slow, "input": {"tag": "held", "gate": str(gate)}},
        headers={"Prefer": "wait=30", "x-stainless-read-timeout": "2"},
    )
    gate.touch()
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "starting"
    assert answer.headers["x-should-retry"] == "false"
    assert answer.headers["preference-applied"] == "wait=30"
    plain = http.post("/v1/predictions", json={"version": slow, "input": {"tag": "plain"}})
    assert plain.status_code == 201 and plain.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("wait", "read_timeout", "hold"),
    [(60, None, 59.75), (60, 60.0, 55.0), (60, 4.0, 3.0), (5, 60.0, 4.75), (60, 0.4, 0.3)],
)
def test_hold_seconds(wait: float, read_timeout: float | None, hold: float) -> None:
    assert hold_seconds(wait, read_timeout) == pytest.approx(hold)


def test_bracket_metadata_fields(http: httpx.Client) -> None:
    """The v2 client's form of `metadata` (values arrive as strings), beside the JSON form."""
    fields = [("metadata[a]", "1"), ("metadata[b][c]", "deep"), ("metadata[tags][]", "p"),
              ("metadata[tags][]", "q"), ("metadata[rows][][k]", "x"),
              ("metadata[rows][][k]", "y"), ("metadata[café]", "crème")]  # fmt: skip
    made = http.post("/v1/files", files=[*fields, ("content", ("a.txt", b"a", "text/plain"))])
    assert made.status_code == 201, made.text
    assert made.json()["metadata"] == {
        "a": "1", "b": {"c": "deep"}, "tags": ["p", "q"], "rows": [{"k": "x"}, {"k": "y"}],
        "café": "crème",
    }  # fmt: skip
    assert made.headers["x-should-retry"] == "false"
    as_json = http.post("/v1/files", files={"content": ("b.txt", b"b"), "metadata": '{"n": 1}'})
    assert as_json.json()["metadata"] == {"n": 1}
    for bad, field in [
        ([("metadata[a]", "1"), ("metadata[a][b]", "2")], "metadata[a][b]"),
        ([("metadata[]", "1")], "metadata[]"),
        ([("metadata[a]", "1"), ("metadata", "{}")], "metadata"),
    ]:
        refused = http.post("/v1/files", files=[*bad, ("content", ("c.txt", b"c"))])
        assert refused.status_code == 422, refused.text
        assert [f["field"] for f in refused.json()["invalid_fields"]] == [field]


def test_an_iterator_models_output_grows_as_a_list_in_the_get_view(
    http: httpx.Client, ticker: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What stream() and use(streaming=True) poll: while it runs, `output` is the items so far,
    and each later view extends the one before (so a poller slicing by length sees each once)."""
    gate = tmp_path_factory.mktemp("v2-grow") / "gate"
    made = http.post(
        "/v1/predictions", json={"version": ticker, "input": {"n": 3, "gate": str(gate)}}
    )
    url = f"/v1/predictions/{made.json()['id']}"
    views = [made.json()]
    for _ in range(1800):  # at most ~180 s (a cold boot), 0.1 s apart
        views.append(http.get(url).json())
        if views[-1]["output"]:
            break
        time.sleep(0.1)
    assert views[-1]["status"] == "processing" and views[-1]["output"] == ["tick 0"], views[-1]
    gate.touch()
    for _ in range(600):
        views.append(http.get(url).json())
        if views[-1]["status"] == "succeeded":
            break
        time.sleep(0.1)
    outputs = [view["output"] or [] for view in views]
    assert outputs[-1] == ["tick 0", "tick 1", "tick 2"], views[-1]
    assert all(later[: len(earlier)] == earlier for earlier, later in pairwise(outputs))
