"""The v2 Python client (`replicate` 2.0.0b4) against a live Modelyard, one area per call:

    .venv-replicate2/bin/python tests/e2e/py2/surface.py AREA

Run by tests/e2e/test_v2_client.py, which starts the server and pushes the models. The client is
used as a user would: configured only by the environment (`REPLICATE_BASE_URL`, which includes
`/v1`, `REPLICATE_API_TOKEN`, and `SSL_CERT_FILE` so that httpx trusts the test CA); nothing
of it is patched. Each area asserts what it sees and exits non-zero with the traceback if a
check fails; the pushed models' versions arrive as `MODELYARD_*` variables.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import replicate
from replicate import AsyncReplicate, Replicate

HELLO = os.environ.get("MODELYARD_HELLO_VERSION", "")
SLOW = os.environ.get("MODELYARD_SLOW_VERSION", "")
TICKER = os.environ.get("MODELYARD_TICKER_VERSION", "")
TEXT_FILE = os.environ.get("MODELYARD_TEXT_FILE_VERSION", "")
TRAINER = os.environ.get("MODELYARD_TRAINER_VERSION", "")
DOOMED = os.environ.get("MODELYARD_DOOMED_VERSION", "")
GATES = Path(os.environ.get("MODELYARD_GATES", "/nonexistent"))
POLL_LIMIT_S = 180.0  # every wait below is bounded by this


def client(**options: Any) -> Replicate:
    """A client as a user makes one: everything else comes from the environment."""
    return Replicate(**options)


def gate() -> Path:
    """A fresh gate file path (the models under test wait until it exists)."""
    return GATES / f"gate-{uuid.uuid4().hex}"


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + POLL_LIMIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# -- areas ------------------------------------------------------------------------------------


def predictions() -> None:
    api = client()
    made = api.predictions.create(version=HELLO, input={"name": "v2"})
    assert made.status == "starting" and made.version == HELLO, made
    done = api.predictions.wait(made.id)
    assert done.status == "succeeded" and "".join(done.output) == "Hello, v2! ", done
    assert api.predictions.get(prediction_id=made.id).id == made.id
    listed = [p.id for p in api.predictions.list()]
    assert made.id in listed, listed
    # by model (its latest version), then a cancel while it runs
    door = gate()
    running = api.models.predictions.create(
        model_owner="admin", model_name="slow", input={"tag": "cancel-me", "gate": str(door)}
    )
    wait_for(lambda: api.predictions.get(prediction_id=running.id).status == "processing",
             "the slow prediction to start")  # fmt: skip
    canceled = api.predictions.cancel(prediction_id=running.id)
    assert canceled.id == running.id
    wait_for(lambda: api.predictions.get(prediction_id=running.id).status == "canceled",
             "the cancel")  # fmt: skip
    # Prefer: wait through the client's own `prefer` parameter
    waited = api.predictions.create(version=HELLO, input={"name": "sync"}, prefer="wait=30")
    assert waited.status == "succeeded" and "".join(waited.output) == "Hello, sync! ", waited


def models() -> None:
    api = client()
    hello = api.models.get(model_owner="admin", model_name="hello")
    assert (hello.owner, hello.name) == ("admin", "hello")
    assert hello.latest_version is not None and hello.latest_version.id == HELLO
    assert "admin/hello" in [f"{m.owner}/{m.name}" for m in api.models.list()]
    versions = api.models.versions.list(model_owner="admin", model_name="hello")
    assert HELLO in [v.id for v in versions], versions
    version = api.models.versions.get(model_owner="admin", model_name="hello", version_id=HELLO)
    schema = version.openapi_schema
    assert schema["components"]["schemas"]["Output"]["x-cog-array-display"] == "concatenate"
    api.models.versions.delete(model_owner="admin", model_name="v2-doomed", version_id=DOOMED)
    left = api.models.versions.list(model_owner="admin", model_name="v2-doomed")
    assert DOOMED not in [v.id for v in left], left
    name = f"v2-made-{uuid.uuid4().hex[:8]}"
    made = api.models.create(
        owner="admin", name=name, visibility="private", hardware="cpu", description="by v2"
    )
    assert (made.owner, made.name, made.visibility) == ("admin", name, "private")
    api.models.update(
        model_owner="admin", model_name=name, description="changed", readme="# Made by v2"
    )
    assert api.models.get(model_owner="admin", model_name=name).description == "changed"
    readme = api.models.readme.get(model_owner="admin", model_name=name)
    assert readme == "# Made by v2", readme
    list(api.models.examples.list(model_owner="admin", model_name="hello"))
    api.models.delete(model_owner="admin", model_name=name)
    try:
        api.models.get(model_owner="admin", model_name=name)
    except replicate.NotFoundError:
        pass
    else:
        raise AssertionError("the deleted model is still there")


def deployments() -> None:
    api = client()
    name = f"v2-{uuid.uuid4().hex[:8]}"
    made = api.deployments.create(
        name=name, model="admin/hello", version=HELLO, hardware="cpu",
        min_instances=0, max_instances=1,
    )  # fmt: skip
    assert (made.owner, made.name) == ("admin", name), made
    got = api.deployments.get(deployment_owner="admin", deployment_name=name)
    assert got.current_release is not None and got.current_release.version == HELLO
    assert name in [d.name for d in api.deployments.list()]
    updated = api.deployments.update(
        deployment_owner="admin", deployment_name=name, max_instances=2
    )
    assert updated.current_release is not None
    assert updated.current_release.configuration.max_instances == 2
    prediction = api.deployments.predictions.create(
        deployment_owner="admin", deployment_name=name, input={"name": "deployed"}, prefer="wait"
    )
    done = api.predictions.wait(prediction.id)
    assert "".join(done.output) == "Hello, deployed! ", done
    api.deployments.delete(deployment_owner="admin", deployment_name=name)


def trainings() -> None:
    api = client()
    destination = f"admin/v2-trained-{uuid.uuid4().hex[:8]}"
    api.models.create(
        owner="admin", name=destination.split("/")[1], visibility="private", hardware="cpu"
    )
    training = api.trainings.create(
        model_owner="admin", model_name="trainer", version_id=TRAINER,
        destination=destination, input={"word": "v2"},
    )  # fmt: skip
    assert training.status == "starting", training
    wait_for(lambda: api.trainings.get(training_id=training.id).status == "succeeded",
             "the training")  # fmt: skip
    done = api.trainings.get(training_id=training.id)
    assert done.output is not None and done.output.version, done
    assert training.id in [t.id for t in api.trainings.list()]
    busy = api.trainings.create(
        model_owner="admin", model_name="trainer", version_id=TRAINER,
        destination=destination, input={"seconds": 60},
    )  # fmt: skip
    api.trainings.cancel(training_id=busy.id)
    wait_for(lambda: api.trainings.get(training_id=busy.id).status == "canceled", "the cancel")
    owner, name = destination.split("/")
    learned = api.models.predictions.create(
        model_owner=owner, model_name=name, input={}, prefer="wait=60"
    )
    assert api.predictions.wait(learned.id).output == "learned: v2"


def files() -> None:
    api = client()
    metadata = {"customer_reference_id": "123", "nested": {"kind": "test"}}
    made = api.files.create(
        content=b"hello, files", filename="hello.txt", type="text/plain", metadata=metadata
    )
    assert made.metadata == metadata, made.metadata
    assert (made.name, made.content_type, made.size) == ("hello.txt", "text/plain", 12), made
    # without metadata, and with a content given as (name, bytes, type) as httpx takes it
    plain = api.files.create(content=("plain.bin", b"\x00\x01", "application/octet-stream"))
    assert plain.metadata == {} and plain.name == "plain.bin", plain
    got = api.files.get(file_id=made.id)
    assert got.metadata == metadata and got.checksums.sha256, got
    assert made.id in [f.id for f in api.files.list()]
    # iterating a list follows its `next` URLs: 100 a page
    for i in range(100):
        api.files.create(content=(f"many-{i}.txt", str(i).encode(), "text/plain"))
    first = api.files.list()
    assert len(first.results) == 100 and first.next, first.next
    every = [f.id for f in api.files.list()]
    assert len(every) == len(set(every)) >= 102 and made.id in every, len(every)
    # the download route's signed parameters come from the file's own download URL
    signed = made.urls.model_dump().get("download")
    assert signed, made.urls
    from urllib.parse import parse_qs, urlsplit

    query = {k: v[0] for k, v in parse_qs(urlsplit(signed).query).items()}
    body = api.files.download(
        file_id=made.id, owner=query["owner"], expiry=int(query["expiry"]),
        signature=query["signature"],
    )  # fmt: skip
    assert body.read() == b"hello, files"
    api.files.delete(file_id=made.id)
    try:
        api.files.get(file_id=made.id)
    except replicate.NotFoundError:
        pass
    else:
        raise AssertionError("the deleted file is still there")


def collections() -> None:
    api = client()
    listed = [c.slug for c in api.collections.list()]
    assert listed == ["v2-things"], listed
    collection = api.collections.get(collection_slug="v2-things")
    assert collection.name == "V2 things"
    assert [f"{m.owner}/{m.name}" for m in collection.models] == ["admin/hello"]


def hardware() -> None:
    skus = [h.sku for h in client().hardware.list()]
    assert skus[0] == "cpu", skus


def account() -> None:
    me = client().account.get()
    assert (me.username, me.type) == ("admin", "user"), me


def webhooks() -> None:
    secret = client().webhooks.default.secret.get()
    assert secret.key and secret.key.startswith("whsec_"), secret


def search() -> None:
    found = client().search(query="hello")
    assert "admin/hello" in [f"{m.model.owner}/{m.model.name}" for m in found.models], found
    # `QUERY /v1/models`: v2 sends the query as a JSON string body
    models = [f"{m.owner}/{m.name}" for m in client().models.search(body="hello")]
    assert "admin/hello" in models, models


def run() -> None:
    # module-level, as the README shows: the module client reads the same environment
    output = replicate.run("admin/hello", input={"name": "run"})
    assert "".join(output) == "Hello, run! ", output
    pinned = replicate.run(f"admin/hello:{HELLO}", input={"name": "pinned", "repeat": 2})
    assert "".join(pinned) == "Hello, pinned! Hello, pinned! ", pinned
    file = replicate.run("admin/text-file", input={"text": "from run"})
    assert isinstance(file, replicate.FileOutput), file
    assert file.read() == b"from run"
    # a local file as input: uploaded to /v1/files first, or sent inline as a data: URI
    local = GATES / f"input-{uuid.uuid4().hex}.txt"
    local.write_text("read by the model")
    assert replicate.run("admin/read-file", input={"document": local}) == "read by the model"
    with local.open("rb") as handle:
        inline = replicate.run(
            "admin/read-file", input={"document": handle}, file_encoding_strategy="base64"
        )
    assert inline == "read by the model", inline
    asyncio.run(_run_async())
    try:
        replicate.run("admin/hello", input={"repeat": 99})
    except replicate.UnprocessableEntityError as exc:
        assert "repeat" in str(exc), exc
    else:
        raise AssertionError("an invalid input ran")


async def _run_async() -> None:
    """The async client takes the same routes (through httpx's AsyncClient)."""
    api = AsyncReplicate()
    output = await api.run("admin/hello", input={"name": "async"})
    assert "".join(output) == "Hello, async! ", output
    file = await api.run("admin/text-file", input={"text": "async file"})
    assert await file.read() == b"async file"
    made = await api.predictions.create(version=HELLO, input={"name": "polled"})
    assert (await api.predictions.wait(made.id)).status == "succeeded"


def use() -> None:
    hello = replicate.use("admin/hello")
    assert hello(name="use") == "Hello, use! "
    text_file = replicate.use("admin/text-file")
    path = text_file(text="through URLPath")  # fetched without a token: a signed URL
    assert Path(path).read_text() == "through URLPath", path
    assert replicate.get_path_url(path).startswith("https://"), path
    frames = replicate.use("admin/frames")  # Iterator[Path]: a list of URLPath once done
    assert [Path(f).read_text() for f in frames(frames=2)] == ["frame 0", "frame 1"]
    streamed = replicate.use("admin/frames", streaming=True)
    items = list(streamed(frames=3))
    assert all(isinstance(item, os.PathLike) for item in items), items
    assert [Path(f).read_text() for f in items] == ["frame 0", "frame 1", "frame 2"]
    ticker = replicate.use("admin/ticker", streaming=True)
    _streams_in_order(lambda door: ticker(n=4, gate=str(door)))


def stream() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _streams_in_order(
            lambda door: replicate.stream("admin/ticker", input={"n": 4, "gate": str(door)})
        )


def _streams_in_order(start: Callable[[Path], Any]) -> None:
    """The ticker pauses after its first tick until the gate exists: the first tick arrived
    while it ran (by polling the growing output), and every tick comes once, in order."""
    door = gate()
    seen = []
    for item in start(door):
        seen.append(str(item))
        if len(seen) == 1:
            assert not door.exists()
            door.touch()
    assert seen == [f"tick {i}" for i in range(4)], seen


def retries() -> None:
    """`run()` of a model slower than the client's read timeout: `Prefer: wait` answers before
    the timeout (read from x-stainless-read-timeout), so no retry makes a second prediction."""
    tag = os.environ["MODELYARD_TAG"]
    api = client(timeout=3.0)
    assert api.run("admin/slow", input={"tag": tag, "seconds": 8}) == tag
    made = [p for p in client().predictions.list() if (p.input or {}).get("tag") == tag]
    assert len(made) == 1, made


_ALL = (predictions, models, deployments, trainings, files, collections, hardware, account,
        webhooks, search, run, use, stream, retries)  # fmt: skip
AREAS: dict[str, Callable[[], None]] = {f.__name__: f for f in _ALL}

if __name__ == "__main__":
    AREAS[sys.argv[1]]()
    print(f"ok {sys.argv[1]}")
