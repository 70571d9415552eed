"""`modelyard serve` registers the starter catalog (models/) on start: public models of one owner,
in collections by task, with their model cards; `--no-catalog` registers nothing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from live import EXAMPLES, ROOT, LiveServer, Tls, serving
from predicting import eventually


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small catalog: the hello-world example as a text model, plus one broken package."""
    root = tmp_path_factory.mktemp("catalog")
    shutil.copytree(EXAMPLES / "hello-world", root / "greeter")
    (root / "greeter" / "README.md").write_text("# Greeter\n\nSays hello, a few times.\n")
    (root / "broken").mkdir()
    (root / "broken" / "cog.yaml").write_text("predict: nowhere.py:Missing\n")
    (root / "catalog.yaml").write_text("greeter:\n  collection: text\n")
    return root


@pytest.fixture(scope="module")
def cataloged(
    tmp_path_factory: pytest.TempPathFactory, tls: Tls, catalog: Path
) -> Iterator[LiveServer]:
    args = ("--catalog", "--catalog-dir", str(catalog), "--catalog-owner", "starter")
    with serving(tmp_path_factory, tls, "cataloged", *args) as live:
        yield live


def test_the_catalog_is_registered_and_runs(cataloged: LiveServer) -> None:
    with cataloged.http() as api:
        model = eventually(
            lambda: (r := api.get("/v1/models/starter/greeter")).is_success and r, "the catalog"
        )
        body = model.json()
        assert body["visibility"] == "public" and body["description"] == "Says hello, a few times."
        assert body["latest_version"]["openapi_schema"]["components"]["schemas"]["Input"]
        assert api.get("/v1/models/starter/greeter/readme").text.startswith("# Greeter")
        assert api.get("/v1/models/starter/broken").status_code == 404  # skipped, not fatal
        text = api.get("/v1/collections/text").json()
        assert [m["name"] for m in text["models"]] == ["greeter"]
        assert api.get("/v1/collections/image").json()["models"] == []
    output = cataloged.replicate().run("starter/greeter", input={"name": "Ada"})
    assert list(output) == ["Hello, Ada! "]


def test_restarting_keeps_one_version(cataloged: LiveServer) -> None:
    cataloged.restart()
    with cataloged.http() as api:
        eventually(lambda: api.get("/v1/collections/text").json()["models"], "the catalog")
        assert len(api.get("/v1/models/starter/greeter/versions").json()["results"]) == 1


def test_no_catalog_registers_nothing(server: LiveServer) -> None:
    with server.http() as api:
        assert api.get("/v1/models/modelyard/ocr").status_code == 404


def test_the_shipped_catalog_lists_every_package() -> None:
    """Each package under models/ has a model card and a collection in catalog.yaml."""
    import yaml

    index = yaml.safe_load((ROOT / "models" / "catalog.yaml").read_text())
    packages = sorted(p.name for p in (ROOT / "models").iterdir() if (p / "cog.yaml").exists())
    assert packages and sorted(index) == packages
    for name in packages:
        assert (ROOT / "models" / name / "README.md").exists(), name
        assert index[name]["collection"] in ("text", "image", "audio")
