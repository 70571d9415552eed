"""The Files API: upload (multipart), get, list, delete and download, each for the owner only;
downloads also work without auth through a signed URL (`owner`, `expiry`, `signature`).

An upload streams into blob storage as it arrives: the `content` part is hashed and written
chunk by chunk in a worker thread, never held in memory, and a body past the upload limit is
answered with 413 problem+json. `metadata` is accepted as a JSON text field (the Python
client 1.0.7), as a JSON file part (the JS client sends `filename="blob"`, `application/json`)
and as bracket fields, `metadata[key]=value` (the v2 Python client; `metadata.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from modelyard.engine.files import FileService, clean_name, guess_type
from modelyard.store.blobs import Blob, BlobStore
from modelyard.store.tables import Account, File

from ..auth import AccountDep, authenticate_request
from ..errors import Problem, invalid_fields_problem, not_found
from ..limits import METADATA_MAX, parse_count, parse_json
from ..pages import decode_cursor, page
from ..platform import PlatformDep
from .metadata import BRACKETED, bracket_metadata

router = APIRouter(tags=["files"])
PAGE_SIZE = 100
FIELD_LIMIT = 1 << 20  # `metadata`, `filename`, `type`: small text, kept in memory
DRAIN_LIMIT = 16 << 20  # read this much of a refused body so the client sees the 413
FILE_NOT_FOUND = "The requested file does not exist."
_FIELDS = ("filename", "type", "metadata")
# An upload holds a thread while its body arrives; its own pool keeps slow uploads from starving
# the default executor (beyond 64 at once, further uploads wait their turn).
UPLOADS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="upload")
log = logging.getLogger("modelyard.api")


@router.post("/files", status_code=201)
async def create(request: Request, platform: PlatformDep, account: AccountDep) -> JSONResponse:
    files = platform.engine.files
    form = _Form(_boundary(request), platform.settings.upload_limit)
    try:
        blob = await _receive(request, form, files.blobs)
    except ClientDisconnect:
        raise Problem(400, "The upload was interrupted before the body ended.") from None
    assert form.result is not None
    name, content_type, metadata = form.result
    file = files.save_upload(account.id, name, content_type, metadata, blob)
    body = files.file_json(file, account.username)
    try:
        await asyncio.to_thread(files.purge_if_due)
    except Exception:  # housekeeping: the upload is stored, a 5xx now would bring it again
        log.exception("purging expired files")
    # `x-should-retry: false`: stored, so the v2 client must not send it again on any answer
    headers = {"Location": body["urls"]["get"], "x-should-retry": "false"}
    return JSONResponse(body, status_code=201, headers=headers)


@router.get("/files")
def list_(platform: PlatformDep, account: AccountDep, cursor: str | None = None) -> JSONResponse:
    """The caller's live uploads, newest first, 100 a page."""
    files = platform.engine.files
    rows = files.uploads(account.id, decode_cursor(cursor), PAGE_SIZE + 1)
    body = page(
        rows,
        PAGE_SIZE,
        platform.urls.api("/files"),
        {},
        key=lambda f: (f.created_at, f.id),
        render=lambda f: files.file_json(f, account.username),
    )
    return JSONResponse(body)


@router.get("/files/{file_id}")
def get(file_id: str, platform: PlatformDep, account: AccountDep) -> JSONResponse:
    files = platform.engine.files
    return JSONResponse(files.file_json(_owned(files, account, file_id), account.username))


@router.delete("/files/{file_id}", status_code=204)
async def delete(file_id: str, platform: PlatformDep, account: AccountDep) -> Response:
    files = platform.engine.files
    file = _owned(files, account, file_id)
    await asyncio.to_thread(files.delete, file)
    return Response(status_code=204)


@router.get("/files/{file_id}/download")
def download(
    file_id: str,
    request: Request,
    platform: PlatformDep,
    owner: str | None = None,
    expiry: str | None = None,
    signature: str | None = None,
) -> FileResponse:
    """With `owner`, `expiry` and `signature` anyone may download (until `expiry`); without
    them the caller's token must be the owner's."""
    files = platform.engine.files
    if owner is None and expiry is None and signature is None:
        file = _owned(files, authenticate_request(request), file_id)
    else:
        file = _signed(files, file_id, owner, expiry, signature)
    found = files.on_disk(file)
    if found is None:
        raise not_found(FILE_NOT_FOUND)
    _, path = found
    return FileResponse(
        path,
        media_type="application/octet-stream",  # as the spec declares for this operation
        filename=file.name,
        headers={"ETag": f'"{file.md5}"', "Cache-Control": "private, no-cache"},
    )


def _owned(files: FileService, account: Account, file_id: str) -> File:
    file = files.upload(account.id, file_id)
    if file is None:
        raise not_found(FILE_NOT_FOUND)
    return file


def _signed(
    files: FileService, file_id: str, owner: str | None, expiry: str | None, signature: str | None
) -> File:
    missing = [
        name
        for name, v in (("owner", owner), ("expiry", expiry), ("signature", signature))
        if not v
    ]
    if missing:
        fields = [_field("required", m, f"{m} is required for a signed download") for m in missing]
        raise invalid_fields_problem(fields, "Invalid download URL")
    assert owner and expiry and signature
    seconds = parse_count(expiry, 12)  # Unix seconds until the year 33658
    if seconds is None:
        fields = [_field("integer", "expiry", "must be Unix seconds")]
        raise invalid_fields_problem(fields, "Invalid download URL")
    reason = files.check_signature(file_id, owner, seconds, signature)
    if reason is not None:
        raise Problem(403, reason, title="Forbidden")
    file = files.signed_file(file_id, owner)
    if file is None:
        raise not_found(FILE_NOT_FOUND)
    return file


# -- receiving an upload ------------------------------------------------------------------------


def _boundary(request: Request) -> bytes:
    media, params = parse_options_header(request.headers.get("content-type", ""))
    if media != b"multipart/form-data":
        raise Problem(
            415,
            "Send the file as multipart/form-data, in a part named `content` "
            "(optional parts: filename, type, metadata).",
            title="Unsupported media type",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise Problem(400, "The multipart/form-data Content-Type has no boundary.")
    return boundary


def _too_large(limit: int) -> Problem:
    return Problem(413, f"Files must be at most {_size(limit)} in size.", title="Content too large")


async def _receive(request: Request, form: _Form, blobs: BlobStore) -> Blob:
    """Stream the body through `form` into blob storage (`BlobStore.receive`: a worker thread
    pulls the chunks from the event loop, parses and writes them); raises the form's problem,
    and what was written is then discarded."""
    declared = parse_count(request.headers.get("content-length", ""), 20)
    if declared is not None and declared > form.limit + FIELD_LIMIT:
        form.error = _too_large(form.limit)  # the content alone cannot fit; read no more of it

    def content(body: Iterator[bytes]) -> Iterator[bytes]:
        drained = 0
        for chunk in body:
            if form.error is None:
                form.feed(chunk)
                yield from form.take()
            else:
                drained += len(chunk)
                if drained > DRAIN_LIMIT:
                    break
        if form.error is None:
            form.finish()
        if form.error is not None:
            raise form.error

    return await blobs.receive(request.stream(), transform=content, executor=UPLOADS)


class _Form:
    """A multipart body fed chunk by chunk: the `content` part's bytes are handed out as they
    arrive (`take`), the other known fields are kept, unknown parts are skipped. Problems are
    recorded in `error` (callbacks must not raise inside the parser)."""

    def __init__(self, boundary: bytes, limit: int) -> None:
        self.limit = limit
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
            },
        )
        self.error: Problem | None = None
        self.result: tuple[str, str, dict[str, Any]] | None = None
        self.fields: dict[str, bytearray] = {}
        self.bracketed: list[tuple[str, bytearray]] = []  # `metadata[...]` fields, in order
        self.bracketed_size = 0  # their names and values, in bytes
        self.content_seen = False
        self.content_name: str | None = None
        self.content_type: str | None = None
        self.size = 0
        self._pending: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._header = [b"", b""]
        self._target: str | None = None

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except FormParserError:
            self.error = Problem(400, "The body is not valid multipart/form-data.")

    def take(self) -> list[bytes]:
        pending, self._pending = self._pending, []
        return pending

    def finish(self) -> None:
        try:
            self.parser.finalize()
        except FormParserError:
            self.error = Problem(400, "The body is not valid multipart/form-data.")
            return
        problems: list[dict[str, str]] = []
        if not self.content_seen:
            problems.append(
                _field("required", "content", "content is required: the part holding the file")
            )
        name = self._text("filename", problems) or self.content_name
        if name is not None and len(name.encode()) > 255:
            problems.append(_field("max_length", "filename", "must be at most 255 bytes of UTF-8"))
        ctype = (self._text("type", problems) or self.content_type or "").strip()
        if len(ctype) > 200 or any(c.isspace() and c != " " for c in ctype):
            problems.append(
                _field("content_type", "type", "must be a media type such as text/plain")
            )
        metadata = self._metadata(problems)
        if problems:
            self.error = invalid_fields_problem(problems, "Invalid file upload")
            return
        name = clean_name(name)
        self.result = (name, ctype or guess_type(name), metadata)

    def _text(self, field: str, problems: list[dict[str, str]]) -> str | None:
        raw = self.fields.get(field)
        if raw is None:
            return None
        try:
            return raw.decode()
        except UnicodeDecodeError:
            problems.append(_field("encoding", field, "must be UTF-8"))
            return None

    def _metadata(self, problems: list[dict[str, str]]) -> dict[str, Any]:
        if self.bracketed:
            if "metadata" in self.fields:
                message = "send metadata as one JSON field or as metadata[key] fields, not both"
                problems.append(_field("duplicate", "metadata", message))
                return {}
            # sized as they arrived (what was past the limit was not kept)
            size = self.bracketed_size if self.bracketed_size > METADATA_MAX else 0
            fields, bad = bracket_metadata(self.bracketed, METADATA_MAX, size)
            if bad is not None:
                problems.append(_field(*bad))
            return fields
        text = self._text("metadata", problems)
        if text is None or not text.strip():
            return {}
        if len(self.fields["metadata"]) > METADATA_MAX:
            message = f"must be at most {METADATA_MAX >> 10} KiB of JSON"
            problems.append(_field("max_length", "metadata", message))
            return {}
        try:
            value, problem = parse_json(text, "metadata")
        except ValueError as exc:
            problems.append(_field("json", "metadata", f"is not valid JSON ({exc})"))
            return {}
        if problem is not None:
            problems.append(problem)
            return {}
        if not isinstance(value, dict):
            problems.append(
                _field("object", "metadata", 'must be a JSON object, such as {"key": "value"}')
            )
            return {}
        return value

    # parser callbacks ----------------------------------------------------------------------

    def _part_begin(self) -> None:
        self._headers, self._target = {}, None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header[0] += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header[1] += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header[0].strip().lower()] = self._header[1].strip()
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("latin-1")
        if name == "content":
            if self.content_seen:
                self.error = invalid_fields_problem(
                    [_field("duplicate", "content", "send one content part")], "Invalid file upload"
                )
                return
            self.content_seen = True
            self._target = "content"
            filename = options.get(b"filename")
            self.content_name = None if filename is None else _decode(filename)
            ctype = self._headers.get(b"content-type")
            self.content_type = None if ctype is None else ctype.decode("latin-1")
        elif name in _FIELDS:  # a text field or, as the JS client sends metadata, a file part
            self._target = name
            self.fields[name] = bytearray()
        elif name.startswith(BRACKETED):  # one `metadata[...]` field of many
            self._target = name
            key = _decode(options.get(b"name", b""))  # httpx sends UTF-8 names
            self.bracketed.append((key, bytearray()))
            self.bracketed_size += len(key.encode())

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None or self._target is None:
            return
        if self._target == "content":
            self.size += end - start
            if self.size > self.limit:
                self.error = _too_large(self.limit)
            else:
                self._pending.append(data[start:end])
            return
        if self._target.startswith(BRACKETED):
            field = self.bracketed[-1][1]
            self.bracketed_size += end - start
            if self.bracketed_size > METADATA_MAX:  # refused at the end; stop keeping it
                self._target = None
                return
        else:
            field = self.fields[self._target]
        field += data[start:end]
        if len(field) > FIELD_LIMIT:
            self.error = Problem(
                413, f"The {self._target} part is larger than 1 MiB.", title="Content too large"
            )


def _field(kind: str, field: str, description: str) -> dict[str, str]:
    """One entry of `invalid_fields`."""
    return {"type": kind, "field": field, "description": description}


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} bytes"
