"""The web pages' first-hour fixes over plain HTTP (issue 17): a favicon, an API reference that
loads without internet, the total time beside its queue, setup and run time, a prediction's
inputs as a table, no empty Logs box, "Tweak it / run again", and no slider for a seed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest
from live import LiveServer
from predicting import start, wait_for

from modelyard.web.forms import form_fields

PASSWORD = "first hour password"
DONE = {"succeeded", "failed", "canceled"}


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> Iterator[httpx.Client]:
    """A browser-like client signed in as admin."""
    server.cli("password", "admin", "--password", PASSWORD)
    with httpx.Client(base_url=server.url, verify=server.tls.context(), timeout=60) as client:
        response = client.post("/signin", data={"username": "admin", "password": PASSWORD,
                                                "next": "/p"})  # fmt: skip
        assert response.status_code == 303
        yield client


def test_favicon_and_api_reference_need_no_internet(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, verify=server.tls.context(), timeout=60) as anonymous:
        home = anonymous.get("/")
        assert '<link rel="icon" type="image/svg+xml" href="/static/favicon.svg">' in home.text
        icon = anonymous.get("/static/favicon.svg")
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")
        docs = anonymous.get("/v1/docs")
        assert docs.status_code == 200
        # Every script and stylesheet the page loads is this server's own: none from a CDN.
        assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
        assert assets and all(a.startswith("/") for a in assets), assets
        for asset in assets:
            loaded = anonymous.get(asset)
            assert loaded.status_code == 200 and loaded.content, asset
        assert "/v1/openapi.json" in docs.text
        assert anonymous.get("/v1/openapi.json").json()["paths"]


def test_times_inputs_and_logs_on_the_pages(
    server: LiveServer, admin: httpx.Client, hello: str, noop: str
) -> None:
    with server.http() as api:
        greeted = wait_for(api, start(api, hello, name="Ada", repeat=2)["id"], DONE)
        wait_for(api, start(api, noop)["id"], DONE)  # the first carries the boot's logs
        quiet = wait_for(api, start(api, noop)["id"], DONE)
    assert greeted["status"] == quiet["status"] == "succeeded"

    page = admin.get(f"/p/{greeted['id']}").text
    timing = re.search(r'<span id="timing">(.*?)</span></p>', page, re.DOTALL)
    assert timing, page
    # The total (created to completed) leads; its parts follow, the runner's figure among them.
    total = greeted["metrics"]["total_time"]
    shown = f"{total * 1000:.0f} ms" if total < 1 else f"{total:.1f} s"
    assert f'<span class="total-time">{shown}</span>' in timing.group(1)
    assert "queued " in timing.group(1) and "run " in timing.group(1)
    # The inputs as a table of name and value, not JSON; its logs are there.
    assert '<table class="list inputs-table"' in page
    assert '<th><code>name</code></th><td><span class="input-text">Ada</span>' in page
    assert "<th><code>repeat</code></th><td><code>2</code>" in page
    assert "<h2>Logs</h2>" in page and "greeting 1 of 2" in page

    # A prediction without logs has no empty Logs box.
    quiet_page = admin.get(f"/p/{quiet['id']}").text
    assert not quiet["logs"]
    assert "<h2>Logs</h2>" not in quiet_page and 'id="logs"' not in quiet_page

    # The predictions list shows the total time.
    listing = admin.get("/p").text
    assert "<th>Time</th>" in listing and shown in listing


def test_tweak_it_fills_the_playground_with_the_inputs(
    server: LiveServer, admin: httpx.Client, hello: str
) -> None:
    with server.http() as api:
        done = wait_for(api, start(api, hello, name="Grace", repeat=3)["id"], DONE)
    page = admin.get(f"/p/{done['id']}").text
    link = re.search(r'<a id="tweak" href="([^"]+)">Tweak it / run again</a>', page)
    assert link, page
    href = link.group(1).replace("&amp;", "&")
    assert href == f"/admin/hello?version={hello}&from={done['id']}#playground"
    model_page = admin.get(href.split("#")[0]).text
    filled = re.search(r"defaultExample: (.*)\};</script>", model_page)
    assert filled and json.loads(filled.group(1))["input"] == {"name": "Grace", "repeat": 3}
    # Another account's prediction, or an unknown id, fills nothing in: the page still answers.
    assert admin.get("/admin/hello?from=p_unknown").status_code == 200


def test_a_seed_is_a_number_box_and_a_small_range_a_slider() -> None:
    schema = {
        "components": {
            "schemas": {
                "Input": {
                    "type": "object",
                    "properties": {
                        "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295},
                        "steps": {"type": "integer", "minimum": 1, "maximum": 50},
                    },
                }
            }
        }
    }
    widgets = {f.name: f.widget for f in form_fields(schema)}
    assert widgets == {"seed": "number", "steps": "range"}
