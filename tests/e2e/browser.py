"""Headless Chromium for browser tests: Playwright's sync API driving Debian's `chromium`.

`playwright install` cannot download Playwright's own browser build here, so the tests use the
Chromium that Debian packages (`apt-get install chromium`; `.ci/run` installs it on a fresh
machine) through `executable_path`. Only the Python package `playwright` comes from PyPI.

    with launched_browser() as browser:
        page = new_page(browser, server.url, ignore_https_errors=True)
        page.goto("/")
        page.get_by_role("button", name="Run").click()
        screenshot(page, "after-run")

Flags: Playwright's `launch()` already passes `--headless`, `--no-sandbox` (its
`chromium_sandbox=False` default; Chromium refuses to start as root with its sandbox on),
`--no-first-run`, `--disable-background-networking`, `--disable-component-update`,
`--disable-sync`, `--disable-dev-shm-usage` and a fresh temporary `--user-data-dir`, so
`LAUNCH_ARGS` adds only what it does not. Screenshots go to `$MODELYARD_ARTIFACTS` if set,
else to `test-artifacts/screenshots/` at the repository root (ignored by git).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Added to the switches Playwright passes itself (see the module docstring): software rendering
# only (there is no GPU), and no QUIC attempts on a machine whose network is closed.
LAUNCH_ARGS: list[str] = ["--disable-gpu", "--disable-quic"]
VIEWPORT_WIDTH = 1280
VIEWPORT_HEIGHT = 900


@contextmanager
def launched_browser() -> Iterator[Browser]:
    """Start Playwright and launch Debian's Chromium headless; both are closed at exit.

    Raises RuntimeError, saying how to install it, when /usr/bin/chromium is missing.
    """
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        raise RuntimeError(
            f"browser tests need Debian's Chromium at {CHROMIUM}: run "
            "`apt-get update && apt-get install -y --no-install-recommends chromium` "
            "(.ci/run does this on a fresh machine; `playwright install` cannot download "
            "a browser here)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def new_page(
    browser: Browser,
    base_url: str,
    *,
    ignore_https_errors: bool = False,
    ca_file: Path | None = None,
) -> Page:
    """A page in a new context whose relative URLs resolve against `base_url`, 1280x900.

    The e2e servers (`tests/e2e/live.py`) serve https with a throwaway `trustme` CA that
    Chromium does not trust, and a context cannot be given an extra CA. So for such a server pass
    `ignore_https_errors=True`, or pass `ca_file` (the CA's PEM, `LiveServer.tls.ca_file`): the
    server's certificate is then verified once here, in Python, against that CA and for the host
    of `base_url`, and the context ignores certificate errors only after that check has passed.

    The context stays open until the browser closes; close it sooner with `page.context.close()`.
    """
    if ca_file is not None:
        _verify_server_certificate(base_url, ca_file)
        ignore_https_errors = True
    context = browser.new_context(
        base_url=base_url,
        viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT},
        ignore_https_errors=ignore_https_errors,
    )
    return context.new_page()


@contextmanager
def checked_page(browser: Browser, base_url: str, ca_file: Path) -> Iterator[Page]:
    """`new_page` for an e2e server (a fresh, signed-out context); on leaving, no JavaScript
    error may have happened on any page it showed."""
    page = new_page(browser, base_url, ca_file=ca_file)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.context.close()
    assert errors == [], errors


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG of `page` as `<artifacts>/<name>.png` and return its path.

    `<artifacts>` is `$MODELYARD_ARTIFACTS` if set, else `<repo>/test-artifacts/screenshots/`;
    it is created if needed. Characters other than letters, digits, `.`, `_` and `-` in `name`
    become `-`, and a file of the same name is overwritten.
    """
    folder = artifacts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name.removesuffix(".png")).strip("-.") or "page"
    path = folder / f"{stem}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def artifacts_dir() -> Path:
    """Where `screenshot` writes: `$MODELYARD_ARTIFACTS`, else `<repo>/test-artifacts/screenshots`."""
    configured = os.environ.get("MODELYARD_ARTIFACTS")
    return Path(configured) if configured else ROOT / "test-artifacts" / "screenshots"


def _verify_server_certificate(base_url: str, ca_file: Path) -> None:
    """Complete a TLS handshake with `base_url`'s server, trusting only `ca_file`."""
    parts = urlsplit(base_url)
    if parts.scheme != "https" or parts.hostname is None:
        raise ValueError(f"ca_file needs an https base_url, not {base_url!r}")
    context = ssl.create_default_context(cafile=str(ca_file))
    address = (parts.hostname, parts.port or 443)
    with (
        socket.create_connection(address, timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=parts.hostname),
    ):
        pass
