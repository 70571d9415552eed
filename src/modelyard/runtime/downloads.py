"""Fetching file inputs to local temporary files before a prediction runs.

Path/File inputs may be `http(s)` URLs or `data:` URIs (and, for the command line, local paths).
All of one prediction's files are fetched in parallel into one folder, removed afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
import os
import urllib.parse
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx

MAX_FILENAME_BYTES = 200
DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class InputFileError(Exception):
    """A file input that cannot be fetched; the message names the input."""


def filename_for(url: str) -> str:
    """A safe local file name for a URL, keeping its extension (as Cog does)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "data":
        mime = parsed.path.split(",", 1)[0].split(";", 1)[0] or "text/plain"
        return "file" + (mimetypes.guess_extension(mime) or "")
    name = urllib.parse.unquote_plus(os.path.basename(parsed.path)).replace("\0", "_")
    name = name.replace("/", "_")
    if name in ("", ".", ".."):  # not a file name: `http://h/`, `http://h/%2e%2e`
        name = "file"
    while len(name.encode()) > MAX_FILENAME_BYTES:
        stem, ext = os.path.splitext(name)
        name = stem[: len(stem) // 2] + "~" + ext
    return name


def decode_data_uri(uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep:
        raise ValueError("a data URI needs a comma before its payload")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except binascii.Error as exc:
            raise ValueError(f"invalid base64 payload: {exc}") from None
    return urllib.parse.unquote_to_bytes(payload)


async def localize_files(
    inputs: dict[str, Any],
    file_fields: dict[str, bool],
    directory: Path,
    *,
    allow_local_paths: bool = False,
    client: httpx.AsyncClient | None = None,
) -> dict[str, Any]:
    """A copy of `inputs` whose file values are local paths inside `directory`."""
    jobs: list[tuple[str, int | None, str]] = []
    for name, is_list in file_fields.items():
        value = inputs.get(name)
        if value is None:
            continue
        if is_list:
            jobs.extend((name, i, v) for i, v in enumerate(value))
        else:
            jobs.append((name, None, value))
    if not jobs:
        return inputs
    owns_client = client is None
    client = client or httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True)
    try:
        paths = await _fetch_all(
            [
                _fetch(client, value, directory / str(n), name, allow_local_paths)
                for n, (name, _, value) in enumerate(jobs)
            ]
        )
    finally:
        if owns_client:
            await client.aclose()
    result = {k: list(v) if file_fields.get(k) and v is not None else v for k, v in inputs.items()}
    for (name, index, _), path in zip(jobs, paths):
        if index is None:
            result[name] = str(path)
        else:
            result[name][index] = str(path)
    return result


async def _fetch_all(fetches: list[Coroutine[Any, Any, Path]]) -> list[Path]:
    """Run the fetches in parallel; the first failure cancels the others and is raised.

    None of them is left running once this returns or raises (the client is closed next).
    """
    tasks = [asyncio.ensure_future(f) for f in fetches]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:  # in input order, so the error named is the first input's
            if task in done and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _fetch(
    client: httpx.AsyncClient, value: str, folder: Path, name: str, allow_local: bool
) -> Path:
    """Fetch one file input; every failure is an InputFileError naming the input."""
    try:
        return await _fetch_one(client, value, folder, name, allow_local)
    except InputFileError:
        raise
    except httpx.HTTPStatusError as exc:
        raise InputFileError(
            f"input {name!r}: downloading {_short(value)} failed with HTTP {exc.response.status_code}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure of a user's URL is the user's error
        raise InputFileError(
            f"input {name!r}: fetching {_short(value)} failed: {_describe(exc)}"
        ) from None


async def _fetch_one(
    client: httpx.AsyncClient, value: str, folder: Path, name: str, allow_local: bool
) -> Path:
    scheme = urllib.parse.urlparse(value).scheme
    folder.mkdir(parents=True, exist_ok=True)
    if scheme == "data":
        target = folder / filename_for(value)
        try:
            target.write_bytes(decode_data_uri(value))
        except ValueError as exc:
            raise InputFileError(f"input {name!r}: {exc}") from None
        return target
    if scheme in ("http", "https"):
        target = folder / filename_for(value)
        async with client.stream("GET", value) as response:
            response.raise_for_status()
            with target.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
        return target
    if allow_local and (scheme in ("", "file")):
        path = Path(urllib.parse.urlparse(value).path if scheme == "file" else value)
        if not path.is_file():
            raise InputFileError(f"input {name!r}: no such file: {path}")
        return path.resolve()
    raise InputFileError(f"input {name!r}: {value[:80]!r} is not an http(s) URL or a data: URI")


def _short(value: str) -> str:
    """A URL as quoted in an error: data: URIs and very long URLs are cut."""
    return value if len(value) <= 200 else value[:200] + "..."


def _describe(exc: BaseException) -> str:
    """One line for an exception: the innermost of an exception group, message folded."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
