"""The web pages in headless Chromium (Debian's, driven by Playwright): browse and search, run a
model from its form with a file upload, watch streamed text grow, see an image output, cancel,
share a prediction, sign in and make a token; the form's checks agree with the server's 422.

Each page is saved as a screenshot (`tests/e2e/browser.py` says where).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import checked_page, new_page, screenshot
from live import EXAMPLES, PACKAGES, LiveServer, fixture_package
from PIL import Image
from playwright.sync_api import Browser, Page, expect

PASSWORD = "browser test password"
FIXTURES = ("constraints_numeric", "constraints_string", "input_lists", "choices", "input_scalars")


@pytest.fixture(scope="module")
def site(server: LiveServer) -> LiveServer:
    server.cli("password", "admin", "--password", PASSWORD)
    with server.http() as api:
        for package, name in [(EXAMPLES / "hello-world", "hello"), (PACKAGES / "mirror", "mirror"),
                              (PACKAGES / "slow", "slow")]:  # fmt: skip
            server.push(package, f"admin/{name}")
            assert api.patch(f"/v1/models/admin/{name}", json={"visibility": "public"}).is_success
        for fixture in FIXTURES:
            server.push(fixture_package(fixture), f"admin/{fixture.replace('_', '-')}")
    return server


@pytest.fixture
def page(chromium: Browser, site: LiveServer) -> Iterator[Page]:
    """A fresh, signed-out browser context."""
    with checked_page(chromium, site.url, site.tls.ca_file) as page:
        yield page


def sign_in(page: Page, then: str = "/") -> None:
    page.goto(f"/signin?next={then}")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"**{then}")


def wait_status(page: Page, *statuses: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (page.text_content("#status") or "").strip()
        if status in statuses:
            return status
        time.sleep(0.05)
    raise AssertionError(f"status stayed {status!r}, not one of {statuses}")


def test_explore_search_and_open_a_model(page: Page) -> None:
    page.goto("/")
    expect(page.locator(".card h2", has_text="admin/hello")).to_be_visible()
    screenshot(page, "explore")
    page.fill("input[name=q]", "mirror")
    page.click("form.search button")
    cards = page.locator(".card h2")
    expect(cards).to_have_count(1)
    expect(cards.first).to_have_text("admin/mirror")
    screenshot(page, "explore-search")
    cards.first.click()
    page.wait_for_url("**/admin/mirror")
    expect(page.locator("h1")).to_have_text("admin/mirror")
    expect(page.locator("#in-image")).to_have_attribute("accept", "image/png")
    expect(page.get_by_text("Sign in", exact=False).last).to_be_visible()
    screenshot(page, "model-signed-out")
    page.click("a[href='#versions']")
    expect(page.locator("#versions")).to_be_visible()
    expect(page.locator("#playground")).to_be_hidden()


def test_streamed_text_grows_as_it_arrives(page: Page, site: LiveServer) -> None:
    sign_in(page, "/admin/hello")
    page.fill("#in-name", "Ada")
    page.fill("#in-repeat", "6")
    expect(page.locator("#code-python")).to_contain_text('"name": "Ada"')  # the API tab follows
    expect(page.locator("#code-curl")).to_contain_text(site.url + "/v1/predictions")
    page.click("#run")
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = page.text_content("#output") or ""
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if (page.text_content("#status") or "").strip() in ("succeeded", "failed"):
            break
        time.sleep(0.02)
    final = "Hello, Ada! " * 6
    assert (page.text_content("#output") or "").strip() == final.strip()
    growing = [t for t in seen if final.startswith(t) and 0 < len(t) < len(final)]
    assert len(growing) >= 2, seen  # it grew in steps, not all at once
    expect(page.locator("#status")).to_have_text("succeeded")
    expect(page.locator("#logs")).to_contain_text("greeting 6 of 6")
    screenshot(page, "model-streamed")


def test_upload_a_file_and_see_the_image(page: Page, tmp_path: Path) -> None:
    photo = tmp_path / "dot.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photo)
    sign_in(page, "/admin/mirror")
    page.set_input_files("#in-image", str(photo))
    page.click("#run")
    assert wait_status(page, "succeeded", "failed") == "succeeded"
    image = page.locator("#output img")
    expect(image).to_be_visible()
    size = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [64, 48]
    expect(page.locator("#output a[download]")).to_contain_text("mirror.png")
    screenshot(page, "model-image-output")


def test_a_wrong_file_type_is_refused_before_uploading(page: Page, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    sign_in(page, "/admin/mirror")
    page.set_input_files("#in-image", str(text))
    page.click("#run")
    error = page.locator(".field[data-name=image] .field-error")
    expect(error).to_contain_text("not an accepted file (image/png)")


def test_cancel_a_long_prediction(page: Page) -> None:
    sign_in(page, "/admin/slow")
    page.fill("#in-tag", "long")
    page.fill("#in-seconds", "60")
    page.click("#run")
    expect(page.locator("#cancel")).to_be_visible()
    wait_status(page, "starting", "processing")
    page.click("#cancel")
    assert wait_status(page, "canceled", "succeeded", "failed") == "canceled"
    expect(page.locator("#cancel")).to_be_hidden()
    screenshot(page, "model-canceled")


def test_share_a_prediction_and_open_it_signed_out(
    page: Page, chromium: Browser, site: LiveServer
) -> None:
    sign_in(page, "/admin/hello")
    page.fill("#in-name", "Link")
    page.fill("#in-repeat", "1")
    page.click("#run")
    wait_status(page, "succeeded")
    page.click("#permalink")
    page.wait_for_url("**/p/*")
    link = page.url
    page.click("#share")
    expect(page.locator(".badge", has_text="public")).to_be_visible()
    screenshot(page, "prediction-owner")
    stranger = new_page(chromium, site.url, ca_file=site.tls.ca_file)
    try:
        stranger.goto(link)
        expect(stranger.locator("#output")).to_contain_text("Hello, Link!")
        expect(stranger.get_by_text("Sign in")).to_be_visible()
        screenshot(stranger, "prediction-shared-signed-out")
    finally:
        stranger.context.close()


def test_sign_in_and_create_a_token(page: Page, site: LiveServer) -> None:
    sign_in(page, "/settings")
    expect(page.locator("#webhook-secret")).to_contain_text("whsec_")
    page.fill("input[name=name]", "from the browser")
    page.click("form.row button[type=submit]")
    token = (page.text_content("#new-token") or "").strip()
    assert token.startswith("r8_")
    screenshot(page, "settings-new-token")
    with site.http(token) as api:
        assert api.get("/v1/account").json()["username"] == "admin"
    page.goto("/p")
    expect(page.locator("table.list")).to_be_visible()
    screenshot(page, "predictions")


def test_train_into_a_new_version(page: Page, site: LiveServer) -> None:
    site.push(PACKAGES / "trainer", "admin/trainer")
    with site.http() as api:
        made = api.post("/v1/models", json={"owner": "admin", "name": "trained",
                                             "visibility": "private", "hardware": "cpu"})  # fmt: skip
        assert made.status_code == 201, made.text
    sign_in(page, "/admin/trainer")
    page.click("a[href='#train']")
    page.fill("#in-destination", "nobody-slash")
    page.click("#train-form button[type=submit]")
    expect(page.locator("#destination-error")).to_contain_text("owner/name")
    page.fill("#in-destination", "admin/trained")
    page.fill("#train-word", "web")
    page.fill("#train-times", "2")
    page.click("#train-form button[type=submit]")
    result = page.locator("#train-result")
    expect(result).to_be_visible(timeout=120_000)
    expect(page.locator("#train-status")).to_have_text("succeeded")
    expect(page.locator("#train-logs")).to_contain_text("learning 'web' x2")
    screenshot(page, "model-trained")
    result.click()
    page.wait_for_url("**/admin/trained?version=*")
    page.fill("#in-prefix", "> ")
    page.click("#run")
    assert wait_status(page, "succeeded", "failed") == "succeeded"
    expect(page.locator("#output")).to_contain_text("> learned: web web")


def test_error_page_says_what_went_wrong(page: Page) -> None:
    response = page.goto("/nobody/nothing")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Model not found")
    screenshot(page, "error-404")


# --- the form's checks agree with the server's -------------------------------------------------

CASES: list[tuple[str, dict[str, str], str, dict[str, Any]]] = [
    # (model, what the form gets, the field in error, the same input as JSON for the API)
    ("constraints-numeric", {"steps": "11"}, "steps", {"steps": 11}),
    ("constraints-numeric", {"steps": "0"}, "steps", {"steps": 0}),
    (
        "constraints-numeric",
        {"steps": "3", "temperature": "1.5"},
        "temperature",
        {"steps": 3, "temperature": 1.5},
    ),  # fmt: skip
    ("constraints-numeric", {"steps": ""}, "steps", {}),  # required
    ("constraints-string", {"word": "a"}, "word", {"word": "a"}),
    ("constraints-string", {"word": "abc", "code": "ABC"}, "code", {"word": "abc", "code": "ABC"}),
    (
        "input-lists",
        {"names": "x", "numbers": "1\ntwo"},
        "numbers",
        {"names": ["x"], "numbers": [1, "two"]},
    ),  # fmt: skip
    (
        "input-scalars",
        {"text": "t", "count": "2.5", "ratio": "1", "flag": ""},
        "count",
        {"text": "t", "count": 2.5, "ratio": 1, "flag": False},
    ),  # fmt: skip
]


def fill(page: Page, values: dict[str, str]) -> None:
    for name, value in values.items():
        selector = f"#in-{name}"
        kind = page.get_attribute(selector, "type")
        if kind == "checkbox":
            page.set_checked(selector, value == "true")
        elif kind == "range":
            continue
        else:
            page.fill(selector, value)


@pytest.fixture(scope="module")
def signed_in_page(chromium: Browser, site: LiveServer) -> Iterator[Page]:
    page = new_page(chromium, site.url, ca_file=site.tls.ca_file)
    sign_in(page)
    yield page
    page.context.close()


@pytest.mark.parametrize(("model", "values", "field", "as_json"), CASES)
def test_the_form_refuses_what_the_server_refuses(
    signed_in_page: Page,
    site: LiveServer,
    model: str,
    values: dict[str, str],
    field: str,
    as_json: dict[str, Any],
) -> None:
    page = signed_in_page
    page.goto(f"/admin/{model}")
    fill(page, values)
    with site.http() as api:
        before = len(api.get("/v1/predictions").json()["results"])
        page.click("#run")
        error = page.locator(f".field[data-name={field}] .field-error")
        expect(error).to_be_visible()
        assert (error.text_content() or "").strip()
        assert len(api.get("/v1/predictions").json()["results"]) == before  # nothing was sent
        refused = api.post(f"/v1/models/admin/{model}/predictions", json={"input": as_json})
    assert refused.status_code == 422, refused.text
    named = [
        f for f in refused.json()["invalid_fields"]
        if f["field"] in (f"input.{field}", "input") or f["field"].startswith(f"input.{field}.")
    ]  # fmt: skip
    # A missing field is reported on `input` itself ("steps is required"), as Replicate does.
    assert any(f["field"] != "input" or field in f["description"] for f in named), named


def test_too_long_text_cannot_be_typed(signed_in_page: Page, site: LiveServer) -> None:
    """maxLength becomes the box's maxlength: the sixth character never gets in."""
    page = signed_in_page
    page.goto("/admin/constraints-string")
    page.fill("#in-word", "abcdef")
    assert page.input_value("#in-word") == "abcde"
    with site.http() as api:
        refused = api.post("/v1/models/admin/constraints-string/predictions",
                           json={"input": {"word": "abcdef"}})  # fmt: skip
    assert (
        refused.status_code == 422 and refused.json()["invalid_fields"][0]["field"] == "input.word"
    )


def test_the_form_sends_what_the_server_accepts(signed_in_page: Page) -> None:
    page = signed_in_page
    page.goto("/admin/constraints-string")
    fill(page, {"word": "abc", "code": "xyz"})
    page.click("#run")
    assert wait_status(page, "succeeded", "failed") == "succeeded"
    expect(page.locator("#output")).to_contain_text("abc:xyz")
    page.goto("/admin/choices")
    expect(page.locator("#in-scheduler option")).to_have_count(3)
    page.select_option("#in-scheduler", "ddim")
    page.click("#run")
    assert wait_status(page, "succeeded", "failed") == "succeeded"
    screenshot(page, "model-choices")
