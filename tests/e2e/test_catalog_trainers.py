"""The starter catalog's two trainers through the official Python client: the text classifier
learns labels it is given, and SmolLM2's LoRA fine-tune learns a pattern the base model does not
follow. Each training makes a new version of a destination model that then runs like any other.

Also: a queued training survives a restart of the server.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import replicate
from live import ROOT, LiveServer, Tls, serving

MODELS = ROOT / "models"
DATA = ROOT / "tests" / "models" / "data"
TRAINER = Path(__file__).parent / "packages" / "trainer"
TERMINAL = ("succeeded", "failed", "canceled")


def finished(client: replicate.Client, training_id: str, limit: float = 900.0) -> Any:
    training = client.trainings.get(training_id)
    deadline = time.monotonic() + limit
    while training.status not in TERMINAL:
        assert time.monotonic() < deadline, f"training {training_id} is still {training.status}"
        time.sleep(0.5)
        training.reload()
    return training


def destination(server: LiveServer, name: str) -> str:
    with server.http() as api:
        made = api.post("/v1/models", json={"owner": "admin", "name": name,
                                            "visibility": "private", "hardware": "cpu"})  # fmt: skip
        assert made.status_code == 201, made.text
    return f"admin/{name}"


@pytest.mark.timeout(900)  # on a fresh machine this builds the model's environment first
def test_the_classifier_learns_topics(server: LiveServer, tmp_path: Path) -> None:
    version = server.push(MODELS / "text-classifier", "admin/text-classifier")
    rows = [json.loads(line) for line in (DATA / "topics.jsonl").read_text().splitlines()]
    random.Random(11).shuffle(rows)
    train_rows, test_rows = rows[:45], rows[45:]
    data = tmp_path / "topics.csv"
    data.write_text("text,label\n" + "".join(
        '"{}",{}\n'.format(r["text"].replace('"', '""'), r["label"]) for r in train_rows))  # fmt: skip
    client = server.replicate()
    with data.open("rb") as handle:  # the client uploads it through the Files API
        training = client.trainings.create(
            version=f"admin/text-classifier:{version}",
            input={"train_data": handle, "held_out": 0},
            destination=destination(server, "topics"),
        )
    training = finished(client, training.id)
    assert training.status == "succeeded", training.error
    assert "45 labelled texts, 3 labels: cooking, sports, weather" in training.logs
    new = training.output["version"]
    right = sum(
        client.run(new, input={"text": row["text"]})["label"] == row["label"] for row in test_rows
    )
    print(f"trained classifier: {right}/{len(test_rows)} held-out texts labelled right")
    assert right / len(test_rows) >= 0.8  # chance: 1/3
    base = client.run(f"admin/text-classifier:{version}", input={"text": test_rows[0]["text"]})
    assert base["labels"] == ["negative", "positive"]  # the base version is untouched


def beep(answer: str) -> bool:
    return answer.strip().upper().startswith("BEEP BOOP")


@pytest.mark.timeout(1200)  # an environment build, three boots and a minute of training
def test_the_llm_learns_a_pattern_with_lora(server: LiveServer) -> None:
    version = server.push(MODELS / "text-generation", "admin/smollm")
    client = server.replicate()
    question = {"prompt": "What is the capital of Italy?", "temperature": 0, "max_new_tokens": 16}
    before = "".join(client.run(f"admin/smollm:{version}", input=question))
    assert not beep(before), before
    with (DATA / "beep.jsonl").open("rb") as handle:
        # Two epochs instead of the default four: the epochs take half as long (~15 s instead of
        # ~30 s on two quiet cores) and the pattern is learnt all the same (measured with seeds
        # 0, 1 and 2: mean loss ~1.2 in the first epoch, 0.11-0.19 in the second, and
        # "BEEP BOOP!" before every answer to three questions).
        training = client.trainings.create(
            version=f"admin/smollm:{version}",
            input={"train_data": handle, "epochs": 2},
            destination=destination(server, "beeper"),
        )
    training = finished(client, training.id)
    assert training.status == "succeeded", training.error
    assert "20 examples, 2 epochs" in training.logs and "epoch 2/2" in training.logs
    after = "".join(client.run(training.output["version"], input=question))
    print(f"before: {before!r}; after: {after!r}")
    assert beep(after), after
    other = {"prompt": "What is the tallest animal?", "temperature": 0, "max_new_tokens": 16}
    assert beep("".join(client.run(training.output["version"], input=other)))


@pytest.mark.timeout(600)
def test_a_lora_training_can_be_canceled(server: LiveServer) -> None:
    version = server.push(MODELS / "text-generation", "admin/smollm")
    client = server.replicate()
    with (DATA / "beep.jsonl").open("rb") as handle:
        training = client.trainings.create(
            version=f"admin/smollm:{version}",
            input={"train_data": handle, "epochs": 50},
            destination=destination(server, "never-beeps"),
        )
    deadline = time.monotonic() + 300
    while "training" not in training.logs:  # it has loaded the model and started to learn
        assert time.monotonic() < deadline and training.status not in TERMINAL, training.logs
        time.sleep(0.5)
        training.reload()
    client.trainings.cancel(training.id)
    training = finished(client, training.id, limit=120)
    assert training.status == "canceled"
    with server.http() as api:
        assert api.get("/v1/models/admin/never-beeps/versions").json()["results"] == []


def test_bad_training_data_fails_the_training(server: LiveServer, tmp_path: Path) -> None:
    version = server.push(MODELS / "text-classifier", "admin/text-classifier")
    data = tmp_path / "one-label.jsonl"
    data.write_text('{"text": "only", "label": "one"}\n')
    client = server.replicate()
    with data.open("rb") as handle:
        training = client.trainings.create(
            version=f"admin/text-classifier:{version}",
            input={"train_data": handle},
            destination=destination(server, "never"),
        )
    training = finished(client, training.id)
    assert training.status == "failed"
    assert "at least two different labels" in training.error
    with server.http() as api:
        assert api.get("/v1/models/admin/never/versions").json()["results"] == []


@pytest.fixture
def one_instance(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    with serving(tmp_path_factory, tls, "one-instance", "--max-instances", "1") as live:
        yield live


def test_a_queued_training_survives_a_restart(one_instance: LiveServer, tmp_path: Path) -> None:
    server = one_instance
    package = tmp_path / "trainer"
    shutil.copytree(TRAINER, package)
    version = server.push(package, "admin/trainer")
    target = destination(server, "trained")
    with server.http() as api:

        def start(**inputs: Any) -> str:
            made = api.post(f"/v1/models/admin/trainer/versions/{version}/trainings",
                            json={"destination": target, "input": inputs})  # fmt: skip
            assert made.status_code == 201, made.text
            return str(made.json()["id"])

        running = start(word="busy", seconds=120)
        deadline = time.monotonic() + 120
        while api.get(f"/v1/trainings/{running}").json()["status"] != "processing":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        queued = start(word="patient")
        assert api.get(f"/v1/trainings/{queued}").json()["status"] == "starting"
    server.restart()  # SIGKILL, then start again on the same data
    client = server.replicate()
    survived = finished(client, queued, limit=300)
    assert survived.status == "succeeded", survived.error
    assert client.run(survived.output["version"], input={}) == "learned: patient"
    interrupted = client.trainings.get(running)
    assert interrupted.status == "failed"  # it was running: it cannot be resumed


def cli_train(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`modelyard train ... -d owner/name` against the live server, as a user runs it."""
    env = {**os.environ, "MODELYARD_API_TOKEN": server.token,
           "SSL_CERT_FILE": str(server.tls.ca_file)}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "modelyard.cli.main", "train", *args, "--api", server.url],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip


def test_the_cli_trains_on_the_server(server: LiveServer) -> None:
    result = cli_train(
        server, str(MODELS / "text-classifier"), "-i", f"train_data=@{DATA / 'topics.jsonl'}",
        "-i", "held_out=0.25", "-d", "admin/cli-topics",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Uploaded topics.jsonl" in result.stderr
    assert "held-out accuracy" in result.stderr  # the training's logs, followed live
    ref = result.stdout.split("Trained ", 1)[1].split()[0]
    assert ref.startswith("admin/cli-topics:")
    answer = server.replicate().run(ref, input={"text": "Snow and ice are expected tonight."})
    assert answer["label"] == "weather"


def test_the_cli_says_what_is_wrong(server: LiveServer) -> None:
    for args, message in [
        ((str(TRAINER), "-d", "not-a-model"), "'not-a-model' is not a model name"),
        ((str(ROOT / "examples" / "hello-world"), "-d", "admin/x"), "has no 'train:' entry"),
        ((str(TRAINER), "-i", "times=many", "-d", "admin/x"), "-i times: 'many' is not a valid"),
    ]:
        result = cli_train(server, *args)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
