"""The Grafana dashboard of docs/operations.md (deploy/grafana/modelyard-dashboard.json) is valid
JSON and asks only for metrics a server exposes: every `modelyard_*` name in its queries is one
that `GET /metrics` of a fresh in-process server describes (by its family and type)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from modelyard.platform import build_app
from modelyard.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "modelyard-dashboard.json"
OPERATIONS = DASHBOARD.parents[2] / "docs" / "operations.md"
NAME = re.compile(r"\bmodelyard_[a-z_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


@pytest_asyncio.fixture(loop_scope="session")
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = build_app(Settings(data_dir=tmp_path / "data", public_url="http://modelyard.test"))
    async with app.router.lifespan_context(app):
        yield app


async def exposed(app: FastAPI) -> tuple[set[str], set[str]]:
    """The series names a scrape of this server may hold, and its families' names."""
    transport = httpx.ASGITransport(app=app)  # its client is 127.0.0.1: loopback may read
    async with httpx.AsyncClient(transport=transport, base_url="http://modelyard.test") as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    families = list(text_string_to_metric_families(answer.text))
    series = {f.name + suffix for f in families for suffix in SUFFIXES.get(f.type, ("",))}
    return series, {f.name for f in families}


async def test_the_dashboard_asks_only_for_exposed_metrics(app: FastAPI) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])
    asked = {name for q in queries for name in NAME.findall(q)}
    series, _ = await exposed(app)
    assert asked, queries
    assert asked <= series, sorted(asked - series)


async def test_the_documented_metrics_are_exposed(app: FastAPI) -> None:
    """docs/operations.md lists what a server exposes."""
    documented = set(re.findall(r"`(modelyard_[a-z_]+)`", OPERATIONS.read_text()))
    series, families = await exposed(app)
    missing = documented - series - families
    assert documented and not missing, sorted(missing)
    assert families <= documented | {f.removesuffix("_total") for f in documented}
