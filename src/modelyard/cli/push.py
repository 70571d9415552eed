"""`modelyard push DIR owner/name`: check a Cog package, pack it and upload it as a version.

The package is validated locally first (`cog.yaml` and the predictor's schema, read from source), so
a broken package fails before anything is sent. The archive (see `modelyard.runtime.package`) is
written to a temporary file and streamed from it, a chunk at a time, so a package of gigabytes is
never held in memory. It goes
as the raw body of `POST {api}/v1/models/{owner}/{name}/versions`; the server answers 201 with a new
Version, 200 when the same content was pushed before, or `application/problem+json` with `detail`.
The contract is written down in docs/push.md.

Progress and notes go to stderr, the result to stdout; every failure is a `PushError` (or a
`CogSpecError`/`PackageError`) whose `str()` is one line, which `main.py` prints as `Error: ...`.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from modelyard import __version__
from modelyard.cogspec.config import load_config
from modelyard.cogspec.schema import predictor_schema
from modelyard.engine.packages import check_requirement_paths
from modelyard.runtime.package import pack_to

from .predict import stderr, warn_ignored_keys

DEFAULT_API = "http://127.0.0.1:8000"
API_URL_VARIABLES = ("MODELYARD_API_URL", "REPLICATE_BASE_URL")
TOKEN_VARIABLES = ("MODELYARD_API_TOKEN", "REPLICATE_API_TOKEN")
CHUNK = 256 * 1024
TIMEOUT = httpx.Timeout(120.0, connect=10.0)  # the server unpacks and checks before it answers
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PushError(Exception):
    """A push that did not succeed; `str()` is one line."""


@dataclass
class PushOptions:
    package_dir: Path
    model: str
    api: str | None = None
    token: str | None = None
    verify: bool = True
    force: bool = False  # an admin replacing the version of another account's model


@dataclass(frozen=True)
class PushResult:
    model: str
    version: dict[str, Any]
    created: bool  # False: the server had this content already (HTTP 200)

    @property
    def reference(self) -> str:
        return f"{self.model}:{self.version['id']}"


def api_base_url(option: str | None = None) -> str:
    """`--api`, else `$MODELYARD_API_URL`, else `$REPLICATE_BASE_URL`, else the local default;
    without a trailing `/` or `/v1` (both client conventions are accepted)."""
    candidates = [option, *(os.environ.get(name) for name in API_URL_VARIABLES)]
    url = next((c.strip() for c in candidates if c and c.strip()), DEFAULT_API)
    return url.rstrip("/").removesuffix("/v1")


def api_token(option: str | None = None) -> str | None:
    """`--token`, else `$MODELYARD_API_TOKEN`, else `$REPLICATE_API_TOKEN`, else None."""
    candidates = [option, *(os.environ.get(name) for name in TOKEN_VARIABLES)]
    return next((c.strip() for c in candidates if c and c.strip()), None)


def parse_model(model: str) -> tuple[str, str]:
    """`owner/name` → (owner, name); a one-line `PushError` for anything else."""
    owner, slash, name = model.partition("/")
    if not slash or not _NAME.match(owner) or not _NAME.match(name):
        raise PushError(
            f"{model!r} is not a model name: expected owner/name (letters, digits, '.', '_', '-')"
        )
    return owner, name


def check_package(package_dir: Path) -> dict[str, Any]:
    """Validate `cog.yaml` and the predictor as the server will; return the OpenAPI schema.

    Raises `CogSpecError` (one line) for a broken package.
    """
    folder = package_dir.resolve()
    if not folder.is_dir():
        raise PushError(f"{package_dir} is not a folder")
    config = load_config(folder)
    warn_ignored_keys(config)
    check_requirement_paths(folder, config)
    return predictor_schema(folder, config)


def run_push(options: PushOptions) -> PushResult:
    """Check, pack and upload the package; print what happened. Raises on any failure."""
    owner, name = parse_model(options.model)
    schema = check_package(options.package_dir)
    api = api_base_url(options.api)
    token = api_token(options.token)
    url = f"{api}/v1/models/{owner}/{name}/versions"
    # The token and the target are checked before the upload: a refused push of gigabytes
    # should fail in a second, not after it has been sent.
    check_target(api, owner, name, token=token, verify=options.verify, force=options.force)
    if options.force:
        url += "?force=true"
    with tempfile.TemporaryFile(prefix="modelyard-push-") as archive:
        package = pack_to(options.package_dir, archive)
        stderr(f"Packed {package.files} files ({_mb(package.size)}), sha256 {package.sha256}")
        archive.seek(0)
        response = upload(url, archive, package.archive_size, token=token, verify=options.verify)
    result = _result(f"{owner}/{name}", response, token)
    state = "a new version" if result.created else "already pushed: the same content, same version"
    print(f"Pushed {result.reference} ({state})")
    print(
        f'Run it: replicate.run("{result.reference}", input={_input_hint(schema)})'
        f" with REPLICATE_BASE_URL={api}"
    )
    return result


NO_TOKEN = "no token was given: set REPLICATE_API_TOKEN (or MODELYARD_API_TOKEN), or pass --token"


def check_target(
    api: str, owner: str, name: str, *, token: str | None, verify: bool = True, force: bool = False
) -> None:
    """Ask the server who the token is (`GET /v1/account`) and whether owner/name exists
    (`GET /v1/models/owner/name`); a `PushError` saying what to do when the push would be
    refused. A push into one's own account creates a missing model (private)."""
    headers = {"User-Agent": f"modelyard/{__version__}", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with httpx.Client(verify=verify, timeout=httpx.Timeout(30.0, connect=10.0)) as client:
            account = client.get(f"{api}/v1/account", headers=headers)
            if account.status_code == 401:
                raise PushError(
                    f"{problem_detail(account)}; "
                    + (NO_TOKEN if not token else "check the token (`modelyard token create`)")
                )
            if account.status_code == 403:
                raise PushError(problem_detail(account))
            if account.status_code != 200:
                return  # a server without these endpoints: its answer to the push decides
            username = str(account.json().get("username", ""))
            model = client.get(f"{api}/v1/models/{owner}/{name}", headers=headers)
    except httpx.ConnectError as exc:  # named as the upload's would be: where the push goes
        raise PushError(
            f"cannot reach {api}/v1/models/{owner}/{name}/versions: {_one_line(exc)}"
        ) from exc
    except httpx.TransportError as exc:
        reason = _one_line(exc) or type(exc).__name__
        raise PushError(f"the connection to {api} failed: {reason}") from exc
    except ValueError as exc:  # not JSON: not a Modelyard API
        raise PushError(f"{api}/v1/account did not answer JSON: is --api right?") from exc
    if owner != username and not force:
        raise PushError(
            f"{owner}/{name} is not in your account ({username}): push to {username}/{name}, "
            f"or, as an admin replacing its version on purpose, pass --force"
        )
    if model.status_code == 404:
        if owner != username:
            raise PushError(
                f"the model {owner}/{name} does not exist (or is not visible to {username}): "
                f"create it first (POST /v1/models), or push to {username}/{name}"
            )
        stderr(f"{owner}/{name} does not exist yet: this push creates it (private)")
    elif model.status_code != 200:
        raise PushError(problem_detail(model))


def upload(
    url: str, archive: BinaryIO, size: int, *, token: str | None, verify: bool = True
) -> httpx.Response:
    """POST the `size` bytes of `archive` as a raw body streamed from it, showing progress on
    stderr."""
    headers = {
        "Content-Type": "application/gzip",
        "Content-Length": str(size),
        "User-Agent": f"modelyard/{__version__}",
        "Accept": "application/json",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    progress = _Progress(size, sys.stderr.isatty())
    try:
        with httpx.Client(verify=verify, timeout=TIMEOUT) as client:
            response = client.post(url, content=_chunks(archive, progress), headers=headers)
    except httpx.ConnectError as exc:
        progress.abandon()
        raise PushError(f"cannot reach {url}: {_one_line(exc)}") from exc
    except httpx.TransportError as exc:
        progress.abandon()
        reason = _one_line(exc) or type(exc).__name__
        raise PushError(f"the connection to {url} failed: {reason}") from exc
    progress.finish()
    return response


def _chunks(archive: BinaryIO, progress: Callable[[int], None]) -> Iterator[bytes]:
    sent = 0
    while chunk := archive.read(CHUNK):
        yield chunk
        sent += len(chunk)
        progress(sent)


class _Progress:
    """Bytes sent / total on one rewritten stderr line on a terminal; one final line otherwise."""

    def __init__(self, total: int, live: bool) -> None:
        self.total = total
        self.live = live
        self.sent = 0
        self._shown = 0.0

    def __call__(self, sent: int) -> None:
        self.sent = sent
        now = time.monotonic()
        if self.live and (now - self._shown >= 0.1 or sent == self.total):
            self._shown = now
            percent = 100 * sent // max(self.total, 1)
            sys.stderr.write(f"\rUploading {_mb(sent)} / {_mb(self.total)} ({percent}%)")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.live:
            sys.stderr.write("\n")
            sys.stderr.flush()
        else:
            stderr(f"Uploaded {_mb(self.sent)} of {_mb(self.total)}")

    def abandon(self) -> None:
        if self.live and self.sent:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _result(model: str, response: httpx.Response, token: str | None) -> PushResult:
    status = response.status_code
    if status not in (200, 201):
        message = problem_detail(response)
        if status == 401 and not token:
            message += "; " + NO_TOKEN
        raise PushError(message)
    try:
        version = response.json()
    except ValueError:
        version = None
    if not isinstance(version, dict) or not isinstance(version.get("id"), str):
        raise PushError(
            f"the server's answer is not a version (HTTP {status}): "
            f"{_one_line(response.text)[:200]!r}"
        )
    return PushResult(model, version, created=status == 201)


def problem_detail(response: httpx.Response) -> str:
    """`<detail> (HTTP <status>)` from a problem+json body; the status and body start otherwise."""
    status = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's validation errors: [{loc, msg, type}, ...]
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    if detail:
        return f"{_one_line(str(detail))} ({status})"
    text = _one_line(response.text)[:200]
    reason = f"{status} {response.reason_phrase}".strip()
    return f"{reason} from {response.request.url}" + (f": {text}" if text else "")


def _input_hint(schema: dict[str, Any]) -> str:
    inputs = schema.get("components", {}).get("schemas", {}).get("Input", {})
    required = inputs.get("required") or []
    return "{" + ", ".join(f'"{name}": ...' for name in required) + "}"


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _mb(size: int) -> str:
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1e3:.1f} kB"
    return f"{size / 1e6:.1f} MB"
