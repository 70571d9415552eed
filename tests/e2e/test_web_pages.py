"""The web pages over plain HTTP (no JavaScript, as a browser without it sees them): browsing,
signing in and out, tokens, sharing predictions, the API signed in by the session cookie, and
the answers to malformed requests."""

from __future__ import annotations

import re
import shutil
from contextlib import contextmanager
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live import EXAMPLES, LiveServer, fixture_package
from predicting import wait_for

PASSWORD = "correct horse battery"
BOB_PASSWORD = "bob's own password"


@pytest.fixture(scope="module")
def site(server: LiveServer, hello: str) -> LiveServer:
    """Two accounts with passwords; admin/hello (public) and admin/secret-model (private)."""
    server.cli("password", "admin", "--password", PASSWORD)
    server.cli("password", "bob", "--password", BOB_PASSWORD)
    server.push(EXAMPLES / "hello-world", "admin/secret-model")  # a push creates it private
    with server.http() as api:
        readme = "# Hello\n\nSays **hello**.\n\n<script>alert(1)</script>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
        assert api.patch("/v1/models/admin/hello", json={"description": "Greets people"}).is_success
        _set_readme(server, "admin/hello", readme)
    return server


def _set_readme(server: LiveServer, ref: str, readme: str) -> None:
    """The model card (the API has no write for it; the catalog sets it from README.md)."""
    from test_models import store

    from modelyard.store.models import get_model

    with store(server) as session:
        get_model(session, *ref.split("/")).model.readme = readme


def browser(server: LiveServer) -> httpx.Client:
    """A cookie-keeping client with no token, like a browser."""
    return httpx.Client(base_url=server.url, verify=server.tls.context(), timeout=60)


@contextmanager
def signed_in(server: LiveServer, username: str, password: str) -> Iterator[httpx.Client]:
    with browser(server) as client:
        response = client.post("/signin", data={"username": username, "password": password,
                                            "next": "/settings"})  # fmt: skip
        assert response.status_code == 303 and response.headers["location"] == "/settings"
        yield client


def csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert match, "the page has a form with a CSRF token"
    return match.group(1)


@pytest.fixture
def admin(site: LiveServer) -> Iterator[httpx.Client]:
    with signed_in(site, "admin", PASSWORD) as client:
        yield client


def test_explore_lists_searches_and_filters(site: LiveServer) -> None:
    with browser(site) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'href="/admin/hello"' in page.text and "Greets people" in page.text
        assert "secret-model" not in page.text  # private: only its owner sees it
        assert "Sign in" in page.text
        found = anonymous.get("/explore", params={"q": "greets"})
        assert 'href="/admin/hello"' in found.text
        nothing = anonymous.get("/explore", params={"q": "zebra crossing"})
        assert "No model matches" in nothing.text and "zebra crossing" in nothing.text
        assert anonymous.get("/explore", params={"sort": "recent"}).status_code == 200
        assert anonymous.get("/explore", params={"sort": "bogus"}).status_code == 200  # default
        empty = anonymous.get("/explore", params={"collection": "no-such-collection"})
        assert empty.status_code == 200 and "No models yet" in empty.text
    with signed_in(site, "admin", PASSWORD) as admin:
        assert 'href="/admin/secret-model"' in admin.get("/").text


def test_model_page_renders_the_card_and_the_form(site: LiveServer) -> None:
    with browser(site) as anonymous:
        page = anonymous.get("/admin/hello")
        assert page.status_code == 200
        assert "<strong>hello</strong>" in page.text and "<table>" in page.text  # Markdown
        assert "<script>alert(1)</script>" not in page.text  # raw HTML in a card is escaped
        assert 'id="in-name"' in page.text and 'id="in-repeat"' in page.text
        assert 'min="1"' in page.text and 'max="10"' in page.text  # the schema's constraints
        assert "Sign in</a> to run this model" in page.text
        for tab in ("#playground", "#api", "#examples", "#versions", "#readme"):
            assert f'href="{tab}"' in page.text
        assert "#train" not in page.text  # hello-world has no train:
        missing = anonymous.get("/admin/no-such-model")
        assert missing.status_code == 404 and "Model not found" in missing.text
        private = anonymous.get("/admin/secret-model")
        assert private.status_code == 404  # not even its existence
        bad_version = anonymous.get("/admin/hello", params={"version": "f" * 64})
        assert bad_version.status_code == 404 and "has no version" in bad_version.text


def test_signing_in_out_and_bad_credentials(site: LiveServer) -> None:
    with browser(site) as client:
        form = client.get("/signin", params={"next": "//evil.example/x"})
        assert 'name="next" value="/"' in form.text  # only paths on this site
        for data, message in [
            ({"username": "admin", "password": "wrong"}, "Wrong username or password."),
            ({"username": "nobody", "password": PASSWORD}, "Wrong username or password."),
            ({"username": "", "password": ""}, "Enter your username."),
            ({}, "Enter your username."),
        ]:
            response = client.post("/signin", data=data)
            assert response.status_code == 400 and message in response.text, data
        assert "modelyard_session" not in client.cookies
        response = client.post("/signin", data={"username": "admin", "password": PASSWORD,
                                                "next": "https://evil.example/"})  # fmt: skip
        assert response.status_code == 303 and response.headers["location"] == "/"
        home = client.get("/")
        assert "Sign out" in home.text and ">admin<" in home.text
        assert client.get("/v1/account").json()["username"] == "admin"  # the API, by cookie
        client.post("/signout", data={"csrf": "forged"})  # another site's form: nothing happens
        assert client.get("/v1/account").json()["username"] == "admin"
        client.post("/signout", data={"csrf": csrf(home)})
        assert "Sign in" in client.get("/").text
        assert client.get("/v1/account").status_code == 401


def test_signed_out_session_no_longer_works(site: LiveServer) -> None:
    with signed_in(site, "bob", BOB_PASSWORD) as client:
        cookie = client.cookies["modelyard_session"]
        client.post("/signout", data={"csrf": csrf(client.get("/settings"))})
    with browser(site) as replay:  # the old cookie, kept by someone
        replay.cookies.set("modelyard_session", cookie)
        assert replay.get("/v1/account").status_code == 401
        assert replay.get("/settings").status_code == 303


def test_tokens_are_created_shown_once_and_revoked(site: LiveServer, admin: httpx.Client) -> None:
    page = admin.get("/settings")
    assert re.search(r"whsec_[A-Za-z0-9+/=]+", page.text)  # the webhook signing secret
    created = admin.post("/settings/tokens", data={"csrf": csrf(page), "name": "laptop"})
    assert created.status_code == 201
    token = re.search(r'id="new-token">(r8_[^<]+)<', created.text).group(1)  # type: ignore[union-attr]
    with site.http(token) as api:
        assert api.get("/v1/account").json()["username"] == "admin"
    assert token not in admin.get("/settings").text  # shown only once
    row = re.search(
        r"<tr><td>laptop</td>.*?/settings/tokens/(\d+)/revoke", admin.get("/settings").text, re.S
    )
    assert row, "the new token is listed by its name"
    revoked_id = row.group(1)
    page = admin.get("/settings")
    assert (
        admin.post(f"/settings/tokens/{revoked_id}/revoke", data={"csrf": csrf(page)}).status_code
        == 303
    )
    with site.http(token) as api:
        assert api.get("/v1/account").status_code == 401
    again = admin.post(f"/settings/tokens/{revoked_id}/revoke", data={"csrf": csrf(page)})
    assert again.status_code == 404 and "already revoked" in again.text


def test_forms_without_their_csrf_token_are_refused(site: LiveServer, admin: httpx.Client) -> None:
    before = admin.get("/settings").text.count("/revoke")
    for data in ({}, {"csrf": "0" * 32}, {"csrf": "x", "name": "evil"}):
        response = admin.post("/settings/tokens", data=data)
        assert response.status_code == 403 and "Form expired" in response.text
    assert admin.get("/settings").text.count("/revoke") == before  # nothing was made
    assert admin.post("/settings/tokens", data={"csrf": csrf(admin.get("/settings")),
                                                "name": "n" * 201}).status_code == 400  # fmt: skip
    with browser(site) as anonymous:  # signed out: sent to sign in, nothing happens
        response = anonymous.post("/settings/tokens", data={"name": "x"})
        assert response.status_code == 303 and response.headers["location"].startswith("/signin")


def test_the_api_by_cookie_needs_the_csrf_header_to_change_things(
    site: LiveServer, admin: httpx.Client, hello: str
) -> None:
    body = {"version": hello, "input": {"name": "Web"}}
    refused = admin.post("/v1/predictions", json=body)
    assert refused.status_code == 403
    assert "x-requested-with" in refused.json()["detail"]
    made = admin.post("/v1/predictions", json=body, headers={"X-Requested-With": "modelyard"})
    assert made.status_code == 201 and made.json()["source"] == "web"
    done = wait_for(admin, made.json()["id"], {"succeeded"})
    assert "".join(done["output"]) == "Hello, Web! "
    listing = admin.get("/p")
    assert made.json()["id"] in listing.text and "succeeded" in listing.text


def test_a_shared_prediction_is_visible_by_link(
    site: LiveServer, admin: httpx.Client, hello: str
) -> None:
    headers = {"X-Requested-With": "modelyard"}
    made = admin.post("/v1/predictions", json={"version": hello, "input": {"name": "Link"}},
                      headers=headers).json()  # fmt: skip
    wait_for(admin, made["id"], {"succeeded"})
    page = admin.get(f"/p/{made['id']}")
    assert page.status_code == 200 and "Hello, Link!" in page.text
    with browser(site) as anonymous, signed_in(site, "bob", BOB_PASSWORD) as bob:
        assert anonymous.get(f"/p/{made['id']}").status_code == 404
        assert bob.get(f"/p/{made['id']}").status_code == 404
        refused = bob.post(f"/p/{made['id']}/share", data={"csrf": csrf(bob.get("/settings")),
                                                          "public": "1"})  # fmt: skip
        assert refused.status_code == 404  # only the owner shares
        shared = admin.post(f"/p/{made['id']}/share", data={"csrf": csrf(page), "public": "1"})
        assert shared.status_code == 303
        public = anonymous.get(f"/p/{made['id']}")
        assert public.status_code == 200 and "Hello, Link!" in public.text
        assert "Make private" not in public.text  # only the owner gets the button
    secret = admin.post("/v1/models/admin/secret-model/predictions", json={"input": {}},
                        headers=headers).json()  # fmt: skip
    refused = admin.post(f"/p/{secret['id']}/share", data={"csrf": csrf(page), "public": "1"})
    assert refused.status_code == 400 and "stay private" in refused.text
    assert admin.get("/p/nonexistent").status_code == 404


def test_signed_out_pages_send_to_sign_in(site: LiveServer) -> None:
    with browser(site) as anonymous:
        for path in ("/p", "/settings"):
            response = anonymous.get(path)
            assert (
                response.status_code == 303
                and response.headers["location"] == f"/signin?next={path}"
            )


def test_password_command(site: LiveServer) -> None:
    def password(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelyard.cli.main", "password", *args,
             "--data-dir", str(site.data_dir)],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip

    short = password("carol", "--password", "short")
    assert short.returncode == 1
    assert short.stderr.strip() == "Error: a password needs at least 8 characters"
    reserved = password("settings", "--password", "long enough")
    assert reserved.returncode == 1
    assert reserved.stderr.strip() == (
        "Error: 'settings' is reserved (it is a path of the API or the web pages)"
    )
    generated = password("carol")
    assert generated.returncode == 0
    chosen: Any = generated.stdout.strip()
    assert len(chosen) >= 12
    with signed_in(site, "carol", chosen) as carol:
        assert carol.get("/v1/account").json()["username"] == "carol"
        assert password("carol", "--password", "a brand new one").returncode == 0
        assert carol.get("/v1/account").status_code == 401  # a new password signs out everywhere


def test_unknown_pages_are_html_for_browsers_and_problems_for_clients(site: LiveServer) -> None:
    html = {"Accept": "text/html,application/xhtml+xml"}
    with browser(site) as client:
        page = client.get("/no/such/page", headers=html)
        assert page.status_code == 404 and "There is nothing at /no/such/page." in page.text
        assert page.headers["content-type"].startswith("text/html")
        for path, headers in [("/no/such/page", {}), ("/v1/nothing", html), ("/v1/x/y", html)]:
            problem = client.get(path, headers=headers)
            assert problem.status_code == 404, path
            assert problem.headers["content-type"] == "application/problem+json", path


HTML_MAKER = """\
import tempfile

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def predict(self) -> Path:
        out = Path(tempfile.mkdtemp()) / "page.html"
        out.write_text("<script>fetch('/v1/account')</script>")
        return out
"""


def test_output_files_cannot_run_script_on_this_site(site: LiveServer, tmp_path: Path) -> None:
    """An HTML output is a download, sandboxed: a link to it cannot act as the signed-in user."""
    package = tmp_path / "html-maker"
    shutil.copytree(EXAMPLES / "hello-world", package)
    (package / "predict.py").write_text(HTML_MAKER)
    site.push(package, "admin/html-maker")
    with site.http() as api:
        made = api.post("/v1/models/admin/html-maker/predictions", json={"input": {}},
                        headers={"Prefer": "wait"}).json()  # fmt: skip
        done = wait_for(api, made["id"], {"succeeded"})
        page = httpx.get(done["output"], verify=site.tls.context())
        assert page.headers["content-disposition"].startswith("attachment")
        assert page.headers["content-security-policy"] == "sandbox"
        assert page.headers["x-content-type-options"] == "nosniff"


def test_shared_pages_show_no_secrets_and_follow_the_models_visibility(
    site: LiveServer, admin: httpx.Client
) -> None:
    site.push(fixture_package("input_secret"), "admin/secretive")
    with site.http() as api:
        assert api.patch("/v1/models/admin/secretive", json={"visibility": "public"}).is_success
        made = api.post(
            "/v1/models/admin/secretive/predictions",
            json={"input": {"api_key": "sk-very-secret"},
                  "webhook": "https://hooks.example/in?token=hook-secret"},
        ).json()  # fmt: skip
        wait_for(api, made["id"], {"succeeded", "failed"})
    page = admin.get(f"/p/{made['id']}")
    assert admin.post(
        f"/p/{made['id']}/share", data={"csrf": csrf(page), "public": "1"}
    ).is_redirect
    with browser(site) as anonymous:
        public = anonymous.get(f"/p/{made['id']}")
        assert public.status_code == 200
        assert "sk-very-secret" not in public.text and "**********" in public.text
        assert "hook-secret" not in public.text
        with site.http() as api:  # the model goes private: its shared predictions go with it
            assert api.patch(
                "/v1/models/admin/secretive", json={"visibility": "private"}
            ).is_success
        assert anonymous.get(f"/p/{made['id']}").status_code == 404
    assert admin.get(f"/p/{made['id']}").status_code == 200  # its owner still sees it
