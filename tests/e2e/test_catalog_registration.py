"""`modelyard serve` registers the starter catalog (models/) on start: public models of one owner,
in collections by task, with their model cards, default examples and cover images;
`--no-catalog` registers nothing. `modelyard record-example` writes the examples and covers."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live import EXAMPLES, ROOT, LiveServer, Tls, serving
from PIL import Image
from predicting import eventually

SHOUTER = """\
from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(self, document: Path = Input(description="A text file")) -> Path:
        print("shouting")
        out = Path("/tmp") / "shouted.txt"
        out.write_text(document.read_text().upper())
        return out
"""


def record(*packages: Path) -> subprocess.CompletedProcess[str]:
    """`modelyard record-example`, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "modelyard.cli.main", "record-example", *map(str, packages)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_example(package: Path, inputs: dict[str, Any], **files: str) -> None:
    folder = package / "example"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / "input.json").write_text(json.dumps(inputs))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small catalog: the hello-world example as a text model, a file-to-file model, and one
    broken package; both good ones with a recorded example and a cover."""
    root = tmp_path_factory.mktemp("catalog")
    greeter, shouter = root / "greeter", root / "shouter"
    shutil.copytree(EXAMPLES / "hello-world", greeter)
    (greeter / "README.md").write_text("# Greeter\n\nSays hello, a few times.\n")
    shutil.copytree(EXAMPLES / "hello-world", shouter)
    (shouter / "predict.py").write_text(SHOUTER)
    for package in (greeter, shouter):
        (package / ".dockerignore").write_text("example/\ncover.*\n")
    write_example(greeter, {"name": "Ada", "repeat": 2})
    write_example(shouter, {"document": "note.txt"}, **{"note.txt": "quiet please"})
    result = record(greeter, shouter)
    assert result.returncode == 0, result.stderr
    (root / "broken").mkdir()
    (root / "broken" / "cog.yaml").write_text("predict: nowhere.py:Missing\n")
    (root / "catalog.yaml").write_text(
        "greeter:\n  collection: text\nshouter:\n  collection: text\n"
    )
    return root


@pytest.fixture(scope="module")
def cataloged(
    tmp_path_factory: pytest.TempPathFactory, tls: Tls, catalog: Path
) -> Iterator[LiveServer]:
    args = ("--catalog", "--catalog-dir", str(catalog), "--catalog-owner", "starter")
    with serving(tmp_path_factory, tls, "cataloged", *args) as live:
        yield live


def registered(api: httpx.Client, ref: str) -> dict[str, Any]:
    """The model once registration (in the background) has reached it."""
    response = eventually(lambda: (r := api.get(f"/v1/models/{ref}")).is_success and r, ref)
    return response.json()


def test_record_example_writes_the_output_and_a_cover(catalog: Path) -> None:
    greeter = json.loads((catalog / "greeter" / "example" / "output.json").read_text())
    assert greeter["output"] == ["Hello, Ada! ", "Hello, Ada! "]
    assert "greeting 2 of 2" in greeter["logs"] and greeter["predict_time"] > 0
    shouter = json.loads((catalog / "shouter" / "example" / "output.json").read_text())
    assert shouter["output"] == {"$file": "output.txt"}  # a file, never mistaken for text
    assert (catalog / "shouter" / "example" / "output.txt").read_text() == "QUIET PLEASE"
    for name in ("greeter", "shouter"):
        with Image.open(catalog / name / "cover.png") as cover:
            assert cover.size == (768, 432)
            darkest, lightest = cover.convert("L").getextrema()
            assert lightest - darkest > 100  # drawn, not blank


def test_record_example_rejects_bad_packages(tmp_path: Path, catalog: Path) -> None:
    not_a_package = record(tmp_path)
    assert not_a_package.returncode == 1
    assert "is not a Cog package (no cog.yaml)" in not_a_package.stderr

    package = tmp_path / "greeter"
    shutil.copytree(catalog / "greeter", package)
    shutil.rmtree(package / "example")
    for inputs, files, expected in [
        (None, {}, "example/input.json does not exist"),
        ("{not json", {}, "input.json: not JSON"),
        ([1, 2], {}, "must be a JSON object of inputs"),
        ({"name": "Ada", "repeat": 11}, {}, "repeat: 11 is greater than the maximum of 10"),
    ]:
        shutil.rmtree(package / "example", ignore_errors=True)
        if inputs is not None:
            (package / "example").mkdir()
            text = inputs if isinstance(inputs, str) else json.dumps(inputs)
            (package / "example" / "input.json").write_text(text)
        result = record(package)
        assert result.returncode == 1 and expected in result.stderr, (expected, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    shouter = tmp_path / "shouter"
    shutil.copytree(catalog / "shouter", shouter)
    (shouter / "example" / "note.txt").unlink()
    missing = record(shouter)
    assert missing.returncode == 1 and "'note.txt' is missing from" in missing.stderr
    # A failed recording leaves the earlier one as it was.
    assert json.loads((shouter / "example" / "output.json").read_text())["output"]


def test_the_catalog_is_registered_and_runs(cataloged: LiveServer) -> None:
    with cataloged.http() as api:
        body = registered(api, "starter/greeter")
        assert body["visibility"] == "public" and body["description"] == "Says hello, a few times."
        assert body["latest_version"]["openapi_schema"]["components"]["schemas"]["Input"]
        assert api.get("/v1/models/starter/greeter/readme").text.startswith("# Greeter")
        registered(api, "starter/shouter")
        assert api.get("/v1/models/starter/broken").status_code == 404  # skipped, not fatal
        text = api.get("/v1/collections/text").json()
        assert [m["name"] for m in text["models"]] == ["greeter", "shouter"]
        assert api.get("/v1/collections/image").json()["models"] == []
    output = cataloged.replicate().run("starter/greeter", input={"name": "Ada"})
    assert list(output) == ["Hello, Ada! "]


def test_default_examples_and_covers_are_served(cataloged: LiveServer) -> None:
    with cataloged.http() as api:
        greeter = registered(api, "starter/greeter")
        example = greeter["default_example"]
        assert (example["status"], example["source"]) == ("succeeded", "web")
        assert example["input"] == {"name": "Ada", "repeat": 2}
        assert example["output"] == ["Hello, Ada! ", "Hello, Ada! "]
        assert example["version"] == greeter["latest_version"]["id"]
        assert "greeting 2 of 2" in example["logs"] and example["metrics"]["predict_time"] > 0
        examples = api.get("/v1/models/starter/greeter/examples").json()["results"]
        assert examples == [example]

        shouter = registered(api, "starter/shouter")["default_example"]
        note, shouted = shouter["input"]["document"], shouter["output"]
        assert note.startswith(cataloged.url) and shouted.startswith(cataloged.url)
        with httpx.Client(verify=cataloged.tls.context()) as anonymous:  # served without auth
            assert anonymous.get(note).text == "quiet please"
            assert anonymous.get(shouted).text == "QUIET PLEASE"
            cover = anonymous.get(greeter["cover_image_url"])
        assert cover.status_code == 200 and cover.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(cover.content)).size == (768, 432)
    # The example's input works as a prediction's input: the file URL is the server's own.
    again = cataloged.replicate().run("starter/shouter", input=shouter["input"])
    assert again.read() == b"QUIET PLEASE"


def test_restarting_keeps_one_version_and_one_example(cataloged: LiveServer, catalog: Path) -> None:
    with cataloged.http() as api:
        before = registered(api, "starter/greeter")
    cataloged.restart()
    with cataloged.http() as api:
        eventually(lambda: api.get("/v1/collections/text").json()["models"], "the catalog")
        assert len(api.get("/v1/models/starter/greeter/versions").json()["results"]) == 1
        after = registered(api, "starter/greeter")
        assert after["default_example"]["id"] == before["default_example"]["id"]
        assert after["cover_image_url"] == before["cover_image_url"]

    # Recorded anew (the version is the same: example/ is not part of the package).
    write_example(catalog / "greeter", {"name": "Grace"})
    assert record(catalog / "greeter").returncode == 0
    cataloged.restart()
    with cataloged.http() as api:
        newer = eventually(
            lambda: (
                (m := registered(api, "starter/greeter"))["default_example"]["input"]
                == {"name": "Grace"}
                and m
            ),
            "the new example",
        )
        assert newer["default_example"]["output"] == ["Hello, Grace! "]
        examples = api.get("/v1/models/starter/greeter/examples").json()["results"]
        assert [e["id"] for e in examples] == [newer["default_example"]["id"]]  # replaced
        assert newer["cover_image_url"] != before["cover_image_url"]  # drawn from "Grace"


def test_no_catalog_registers_nothing(server: LiveServer) -> None:
    with server.http() as api:
        assert api.get("/v1/models/modelyard/ocr").status_code == 404


def test_the_shipped_catalog_lists_every_package() -> None:
    """Each package under models/ has a model card, a collection in catalog.yaml, a recorded
    example and a cover, and leaves the example and cover out of its package."""
    import yaml

    index = yaml.safe_load((ROOT / "models" / "catalog.yaml").read_text())
    packages = sorted(p.name for p in (ROOT / "models").iterdir() if (p / "cog.yaml").exists())
    assert len(packages) == 9 and sorted(index) == packages
    for name in packages:
        package = ROOT / "models" / name
        assert (package / "README.md").exists(), name
        assert index[name]["collection"] in ("text", "image", "audio")
        assert index[name]["description"], name
        assert (package / "example" / "input.json").exists(), name
        assert (package / "example" / "output.json").exists(), name
        assert list(package.glob("cover.*")), name
        assert (package / ".dockerignore").read_text().split() == ["example/", "cover.*"], name
