"""`modelyard push` checks the token and the target with the server before it packs and uploads
anything (issue 17): a refused push fails at once, in one line that says what to do."""

from __future__ import annotations

import os
import subprocess

from live import EXAMPLES, LiveServer, _modelyard

TOKENS = ("MODELYARD_API_TOKEN", "REPLICATE_API_TOKEN")


def push(
    server: LiveServer, ref: str, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in TOKENS}
    env["SSL_CERT_FILE"] = str(server.tls.ca_file)
    if token is not None:
        env["REPLICATE_API_TOKEN"] = token
    return subprocess.run(
        [_modelyard(), "push", str(EXAMPLES / "hello-world"), ref, "--api", server.url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def refused_before_upload(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 1, one `Error:` line holding every fragment, and nothing packed or sent."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert proc.stdout == ""


def test_no_token_says_how_to_give_one(server: LiveServer) -> None:
    refused_before_upload(
        push(server, "admin/first-hour"),
        "(HTTP 401)",
        "no token was given: set REPLICATE_API_TOKEN (or MODELYARD_API_TOKEN), or pass --token",
    )


def test_a_wrong_token_is_refused_before_the_upload(server: LiveServer) -> None:
    refused_before_upload(
        push(server, "admin/first-hour", token="r8_not_a_token"), "(HTTP 401)", "check the token"
    )


def test_another_accounts_model_is_refused_before_the_upload(server: LiveServer) -> None:
    refused_before_upload(
        push(server, "someone/first-hour", token=server.token),
        "someone/first-hour is not in your account (admin)",
        "push to admin/first-hour",
        "--force",
    )


def test_a_new_model_in_ones_own_account_is_created(server: LiveServer) -> None:
    proc = push(server, "admin/first-hour-new", token=server.token)
    assert proc.returncode == 0, proc.stderr
    assert "admin/first-hour-new does not exist yet: this push creates it (private)" in proc.stderr
    assert "Pushed admin/first-hour-new:" in proc.stdout
