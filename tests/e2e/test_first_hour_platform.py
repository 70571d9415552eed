"""What a new user trips over in the first hour (issue 17), on a live server: an admin's push
into another account's model (a catalog model) is refused unless the request says `force`,
says what to do, and can be undone; a push to a model that does not exist says how to create it;
owner pages (`/{owner}`) list an account's models; a silent setup() shows a heartbeat line.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import launched_browser, new_page, screenshot
from live import EXAMPLES, PACKAGES, LiveServer, Tls, push_gated_setup
from playwright.sync_api import expect
from predicting import eventually, get, wait_for

from modelyard.runtime.package import pack_package

OWNER = "starter"
PASSWORD = "first hour password"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-model catalog: packages/noop as starter/greeter."""
    root = tmp_path_factory.mktemp("first-hour-catalog")
    shutil.copytree(PACKAGES / "noop", root / "greeter")
    (root / "catalog.yaml").write_text("greeter:\n  collection: text\n")
    return root


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tls: Tls, catalog: Path
) -> Iterator[LiveServer]:
    args = ["--catalog", "--catalog-dir", str(catalog), "--catalog-owner", OWNER]
    # A short boot heartbeat, so a silent setup() shows one within the test's gate.
    live = LiveServer(data_dir=tmp_path_factory.mktemp("first-hour"), tls=tls, extra_args=args,
                      env={"MODELYARD_BOOT_HEARTBEAT": "0.2"}).start()  # fmt: skip
    try:
        yield live
    finally:
        live.stop()


def browser(server: LiveServer) -> httpx.Client:
    """A cookie-keeping client with no token, like a browser."""
    return httpx.Client(base_url=server.url, verify=server.tls.context(), timeout=60)


def latest(api: httpx.Client, ref: str) -> str | None:
    response = api.get(f"/v1/models/{ref}")
    if not response.is_success or not response.json().get("latest_version"):
        return None
    return str(response.json()["latest_version"]["id"])


def push(api: httpx.Client, package: Path, ref: str, *, force: bool = False) -> httpx.Response:
    """The raw push `modelyard push` makes (`?force=true` for its `--force`)."""
    query = "?force=true" if force else ""
    return api.post(
        f"/v1/models/{ref}/versions{query}",
        content=pack_package(package).data,
        headers={"Content-Type": "application/gzip"},
    )


def test_an_admin_cannot_replace_a_catalog_model_by_accident_and_can_undo_it(
    server: LiveServer,
) -> None:
    ref = f"{OWNER}/greeter"
    with server.http() as api:
        catalog_version = eventually(lambda: latest(api, ref), f"{ref} registered")
        hello = pack_package(EXAMPLES / "hello-world").sha256

        refused = push(api, EXAMPLES / "hello-world", ref)
        assert refused.status_code == 403, refused.text
        detail = refused.json()["detail"]
        # It says whose model it is and both ways on: one's own account, or --force.
        assert f"belongs to {OWNER}" in detail and "admin/greeter" in detail
        assert "--force" in detail and "force=true" in detail
        assert latest(api, ref) == catalog_version
        versions = api.get(f"/v1/models/{ref}/versions").json()["results"]
        assert [v["id"] for v in versions] == [catalog_version]  # nothing left behind

        forced = push(api, EXAMPLES / "hello-world", ref, force=True)
        assert forced.status_code == 201, forced.text
        assert latest(api, ref) == hello

        # The undo: pushing the catalog's package again makes its version latest again.
        undone = push(api, PACKAGES / "noop", ref, force=True)
        assert undone.status_code == 200, undone.text
        assert undone.json()["id"] == catalog_version
        assert latest(api, ref) == catalog_version

        assert push(api, EXAMPLES / "hello-world", ref, force=True).status_code == 200
        assert latest(api, ref) == hello

    # A start registers the catalog again: its models run what models/ holds.
    server.restart()
    with server.http() as api:
        eventually(lambda: latest(api, ref) == catalog_version, f"{ref} restored")
        ids = {v["id"] for v in api.get(f"/v1/models/{ref}/versions").json()["results"]}
        assert ids == {catalog_version, hello}  # the pushed version is kept, not latest
    assert f"{ref}: latest restored to {catalog_version}" in server.logs()


def test_pushing_into_a_model_that_does_not_exist_says_how_to_create_it(
    server: LiveServer,
) -> None:
    with server.http() as api:
        for force in (False, True):
            missing = push(api, EXAMPLES / "hello-world", f"{OWNER}/hello", force=force)
            assert missing.status_code == 404, missing.text
            detail = missing.json()["detail"]
            assert "POST /v1/models" in detail and "admin/hello" in detail
        assert api.get(f"/v1/models/{OWNER}/hello").status_code == 404

        # In one's own account a push creates the model (private), as before.
        own = push(api, EXAMPLES / "hello-world", "admin/hello")
        assert own.status_code == 201, own.text
        assert api.get("/v1/models/admin/hello").json()["visibility"] == "private"


def test_owner_pages_list_an_accounts_models(server: LiveServer) -> None:
    """`/{owner}` lists the account's models like replicate.com/{owner}: the public ones for
    everyone, the private ones too for the owner."""
    server.cli("password", "admin", "--password", PASSWORD)
    with server.http() as api:
        eventually(lambda: latest(api, f"{OWNER}/greeter"), "the catalog registered")
        assert push(api, PACKAGES / "noop", "admin/owned").status_code in (200, 201)
    with browser(server) as anonymous:
        catalog = anonymous.get(f"/{OWNER}")
        assert catalog.status_code == 200 and f'href="/{OWNER}/greeter"' in catalog.text
        mine = anonymous.get("/admin")
        assert mine.status_code == 200 and "admin/owned" not in mine.text  # private
        missing = anonymous.get("/no-such-account", headers={"Accept": "text/html"})
        assert missing.status_code == 404 and "There is no account no-such-account" in missing.text
        assert anonymous.get("/explore").status_code == 200  # fixed paths still win
    with browser(server) as admin:
        signin = admin.post("/signin", data={"username": "admin", "password": PASSWORD})
        assert signin.status_code == 303, signin.text
        mine = admin.get("/admin")
        assert 'href="/admin/owned"' in mine.text and "private" in mine.text


def test_an_owner_page_in_the_browser_leads_to_the_models(server: LiveServer) -> None:
    with server.http() as api:
        eventually(lambda: latest(api, f"{OWNER}/greeter"), "the catalog registered")
    with launched_browser() as chromium:
        page = new_page(chromium, server.url, ca_file=server.tls.ca_file)
        page.goto(f"/{OWNER}")
        expect(page.get_by_role("heading", level=1)).to_have_text(OWNER)
        screenshot(page, "owner-page")
        page.get_by_role("link", name=f"{OWNER}/greeter").first.click()
        page.wait_for_url(f"**/{OWNER}/greeter")


def test_a_silent_setup_shows_a_heartbeat_in_the_logs(server: LiveServer, tmp_path: Path) -> None:
    """setup() prints one line, then waits for the gate, silent: the prediction's logs (the
    API's and so the page's) say it is still running, while it is `starting`."""
    version, gate = push_gated_setup(server, tmp_path, "silent-setup")
    with server.http() as api:
        created = api.post("/v1/predictions", json={"version": version, "input": {}})
        assert created.status_code == 201, created.text
        pid = created.json()["id"]

        def after_the_last_line() -> dict[str, Any] | None:
            body = get(api, pid)
            _, said, silence = body["logs"].partition("setup: loading weights")
            return body if said and "setup() running, " in silence else None

        beating = eventually(after_the_last_line, "a heartbeat after setup()'s last line")
        assert beating["status"] == "starting"
        gate.touch()
        done = wait_for(api, pid, {"succeeded", "failed", "canceled"})
        assert done["status"] == "succeeded", done
        assert done["output"] == "ready"
