"""The model page's first-hour fixes in headless Chromium (issue 17): a chosen file clears the
URL box and shows a preview, code blocks have Copy buttons, and the Python snippet of a
streaming model iterates its output instead of printing a generator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import checked_page, screenshot
from live import PACKAGES, LiveServer
from PIL import Image
from playwright.sync_api import Browser, Page, expect


@pytest.fixture(scope="module")
def site(server: LiveServer) -> LiveServer:
    with server.http() as api:
        for name in ("mirror", "ticker"):
            server.push(PACKAGES / name, f"admin/{name}")
            assert api.patch(f"/v1/models/admin/{name}", json={"visibility": "public"}).is_success
    return server


@pytest.fixture
def page(chromium: Browser, site: LiveServer) -> Iterator[Page]:
    with checked_page(chromium, site.url, site.tls.ca_file) as page:
        yield page


def test_a_chosen_file_clears_the_url_box_and_shows_a_preview(page: Page, tmp_path: Path) -> None:
    image = tmp_path / "dot.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(image)
    page.goto("/admin/mirror")
    url_box = page.locator(".file-url[data-url-for=image]")
    url_box.fill("https://example.com/earlier.png")
    page.set_input_files("#in-image", str(image))
    expect(url_box).to_have_value("")
    preview = page.locator(".drop img.preview")
    expect(preview).to_have_count(1)
    expect(preview).to_have_attribute("alt", "dot.png")
    screenshot(page, "first-hour-file-preview")
    # Typing a URL again drops the chosen file and its preview.
    url_box.fill("https://example.com/other.png")
    expect(preview).to_have_count(0)
    assert page.eval_on_selector("#in-image", "el => el.files.length") == 0


def test_streaming_snippet_iterates_and_code_has_copy_buttons(page: Page) -> None:
    page.goto("/admin/ticker#api")
    python = page.locator("#code-python")
    expect(python).to_contain_text("for item in output:")
    expect(python).to_contain_text('print(item, end="")')
    assert "print(output)" not in python.inner_text()
    copy = page.locator(".code-wrap:has(#code-python) button.copy")
    expect(copy).to_have_count(1)
    expect(page.locator(".code-wrap button.copy")).to_have_count(4)  # one per language
    copy.click()
    expect(copy).to_have_text("Copied")
    screenshot(page, "first-hour-api-tab")
