"""The Files API and files flowing through predictions, on a live server with the official client.

Uploads (metadata as a text field or a file part), get, list, delete, download with auth or a
signed URL; file inputs given as an upload (`/v1/files/{id}`), a `data:` URI or an http URL;
file outputs read through `FileOutput`, public (no token) and expiring by `--output-expiry`;
uploads expiring by `--file-expiry`; the upload limit. Every response the tests' httpx clients
(and the official client's own httpx client) get is checked against Replicate's contract.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
from contract.openapi import Contract, Recorder
from fixture_support import serving_folder
from live import LiveServer, Tls, fixture_package
from replicate.exceptions import ReplicateError
from replicate.helpers import FileOutput

from modelyard.engine.files import download_signature, signing_key

PROBLEM = "application/problem+json"
CONTRACT = Contract.load()


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """Every response of the test's clients, checked against the contract when the test ends."""
    recording = Recorder()
    yield recording
    recording.check_all(CONTRACT)


def api(server: LiveServer, recorder: Recorder, token: str | None = None) -> httpx.Client:
    return recorder.attach(server.http(token))


def official(server: LiveServer, recorder: Recorder, token: str | None = None) -> replicate.Client:
    client = server.replicate(token)
    recorder.attach(client._client)  # the client's own httpx client: its responses are checked too
    return client


def anonymous(server: LiveServer, recorder: Recorder) -> httpx.Client:
    return recorder.attach(httpx.Client(verify=server.tls.context(), timeout=60))


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status and isinstance(body["detail"], str)
    return body


def invalid_field(response: httpx.Response) -> set[str]:
    body = problem(response, 422)
    return {f["field"] for f in body["invalid_fields"]}


def upload(client: httpx.Client, data: bytes, name: str = "a.txt", **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/files", files={"content": (name, data, "text/plain")}, data=fields)
    assert response.status_code == 201, response.text
    return response.json()


def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until `check()` holds (expiry is a policy in seconds; tests never assert timing)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)


def blob_files(server: LiveServer) -> list[Path]:
    return sorted(p for p in (server.data_dir / "blobs").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def input_path(server: LiveServer) -> str:
    return server.push(fixture_package("input_path"), "admin/input-path")


@pytest.fixture(scope="module")
def outputs(server: LiveServer) -> None:
    for name in ("output_path", "output_list_path", "output_iterator_path"):
        server.push(fixture_package(name), f"admin/{name.replace('_', '-')}")


@pytest.fixture(scope="module")
def web_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A plain http server on loopback, as any URL a user might pass as a file input."""
    folder = tmp_path_factory.mktemp("web")
    with serving_folder(folder) as base:
        yield base, folder


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    """A server whose files live one second and whose uploads may be 1000 bytes at most."""
    live = LiveServer(
        data_dir=tmp_path_factory.mktemp("short"),
        tls=tls,
        extra_args=["--output-expiry", "1", "--file-expiry", "1", "--upload-limit", "1000"],
    ).start()
    try:
        yield live
    finally:
        live.stop()


# -- the Files API ------------------------------------------------------------------------------


def test_python_client_uploads_gets_lists_and_deletes(
    server: LiveServer, recorder: Recorder, tmp_path: Path
) -> None:
    client = official(server, recorder)
    path = tmp_path / "notes.txt"
    path.write_bytes(b"first file")
    first = client.files.create(path, metadata={"purpose": "test", "n": 1})
    assert first.name == "notes.txt" and first.content_type == "text/plain" and first.size == 10
    assert first.etag == hashlib.md5(b"first file").hexdigest() == first.checksums["md5"]
    assert first.checksums["sha256"] == hashlib.sha256(b"first file").hexdigest()
    assert first.metadata == {"purpose": "test", "n": 1}
    assert first.urls["get"] == f"{server.url}/v1/files/{first.id}"
    lifetime = datetime.fromisoformat(first.expires_at) - datetime.fromisoformat(first.created_at)
    assert lifetime == timedelta(hours=24)  # the default --file-expiry
    with open(path, "rb") as stream:
        second = client.files.create(stream)  # a file object, no metadata
    assert second.metadata == {} and second.id != first.id

    assert client.files.get(first.id).dict() == first.dict()
    listed = [f.id for f in client.files.list()]
    assert listed.index(second.id) < listed.index(first.id)  # newest first
    with api(server, recorder) as http:
        assert http.get(f"/files/{first.id}").json()["id"] == first.id  # also at the root
        page = http.get("/v1/files").json()
        assert page["next"] is None and page["previous"] is None

    assert client.files.delete(first.id) is True
    with pytest.raises(ReplicateError) as missing:
        client.files.get(first.id)
    assert missing.value.status == 404
    assert first.id not in [f.id for f in client.files.list()]
    with api(server, recorder) as http:
        problem(http.delete(f"/v1/files/{first.id}"), 404)
    # `second` has the same bytes, so deleting `first` kept them
    assert client.files.get(second.id).checksums == first.checksums


def test_metadata_as_text_field_or_as_file_part(server: LiveServer, recorder: Recorder) -> None:
    with api(server, recorder) as http:
        as_text = upload(http, b"x", metadata='{"a": 1}')
        assert as_text["metadata"] == {"a": 1}
        # The JS client: metadata is a Blob part (filename "blob", application/json).
        response = http.post(
            "/v1/files",
            files=[
                ("content", ("buffer_1712", b"\x00\x01", "application/octet-stream")),
                ("metadata", ("blob", b'{"b": [2]}', "application/json")),
            ],
        )
        assert response.status_code == 201, response.text
        as_part = response.json()
        assert as_part["metadata"] == {"b": [2]} and as_part["name"] == "buffer_1712"
        assert as_part["content_type"] == "application/octet-stream" and as_part["size"] == 2
        # `filename` and `type` fields win over the part's headers; names lose their folders.
        renamed = upload(http, b"a,b", "../../up.txt", filename="table.csv", type="text/csv")
        assert renamed["name"] == "table.csv" and renamed["content_type"] == "text/csv"
        assert upload(http, b"z", "../../etc/passwd")["name"] == "passwd"
        bare = http.post("/v1/files", files={"content": (None, b"no filename")})
        assert bare.status_code == 201 and bare.json()["name"] == "file"
        empty = upload(http, b"", "empty.txt")
        assert empty["size"] == 0 and empty["etag"] == hashlib.md5(b"").hexdigest()


def test_malformed_uploads_are_problems_and_change_nothing(
    server: LiveServer, recorder: Recorder
) -> None:
    with api(server, recorder) as http:
        upload(http, b"already here")
        before, blobs = http.get("/v1/files").json()["results"], blob_files(server)
        meta = ("blob", b"{}", "application/json")
        assert invalid_field(http.post("/v1/files", files={"metadata": meta})) == {"content"}
        assert invalid_field(
            http.post("/v1/files", files={"content": ("a", b"x")}, data={"metadata": "{not json"})
        ) == {"metadata"}
        assert invalid_field(
            http.post(
                "/v1/files",
                files={"content": ("a", b"x"), "metadata": ("blob", b"[1, 2]", "application/json")},
            )
        ) == {"metadata"}
        assert invalid_field(
            http.post("/v1/files", files={"content": ("a", b"x")}, data={"filename": "n" * 256})
        ) == {"filename"}
        twice = [("content", ("a", b"x")), ("content", ("b", b"y"))]
        assert invalid_field(http.post("/v1/files", files=twice)) == {"content"}
        assert (
            "multipart/form-data"
            in problem(http.post("/v1/files", json={"content": "x"}), 415)["detail"]
        )
        no_boundary = {"content-type": "multipart/form-data"}
        assert (
            "boundary"
            in problem(http.post("/v1/files", content=b"x", headers=no_boundary), 400)["detail"]
        )
        garbage = {"content-type": "multipart/form-data; boundary=zzz"}
        response = http.post("/v1/files", content=b"this is not multipart", headers=garbage)
        assert 400 <= response.status_code < 500
        problem(response, response.status_code)
        problem(
            http.post(
                "/v1/files",
                files={"content": ("a", b"x")},
                headers={"Authorization": "Bearer nope"},
            ),
            401,
        )
        assert http.get("/v1/files").json()["results"] == before
    assert blob_files(server) == blobs  # nothing half-written left behind


def test_unknown_and_other_accounts_files_are_not_found(
    server: LiveServer, recorder: Recorder, bob: str
) -> None:
    with api(server, recorder) as admin, api(server, recorder, bob) as other:
        for path in ("/v1/files/0000000000000000000000000", "/v1/files/nope/download"):
            problem(admin.get(path), 404)
        problem(admin.delete("/v1/files/0000000000000000000000000"), 404)
        bobs = upload(other, b"bob's secret", "bob.txt")
        problem(admin.get(f"/v1/files/{bobs['id']}"), 404)
        problem(admin.get(f"/v1/files/{bobs['id']}/download"), 404)
        problem(admin.delete(f"/v1/files/{bobs['id']}"), 404)
        assert bobs["id"] not in [f["id"] for f in admin.get("/v1/files").json()["results"]]
        assert other.get(f"/v1/files/{bobs['id']}").status_code == 200  # untouched
        assert [f["id"] for f in other.get("/v1/files").json()["results"]] == [bobs["id"]]


def test_list_pages_hold_100_newest_first_with_absolute_next(
    server: LiveServer, recorder: Recorder
) -> None:
    carol = server.cli("token", "create", "--username", "carol").strip()
    with api(server, recorder, carol) as http:
        ids = [upload(http, str(i).encode(), f"{i}.txt")["id"] for i in range(101)]
        first = http.get("/v1/files").json()
        assert [f["id"] for f in first["results"]] == ids[::-1][:100]
        assert first["next"].startswith(f"{server.url}/v1/files?cursor=")
        second = http.get(first["next"]).json()
        assert [f["id"] for f in second["results"]] == [ids[0]] and second["next"] is None
        problem(http.get("/v1/files", params={"cursor": "not a cursor"}), 400)


def test_downloads_with_auth_or_a_signed_url(
    server: LiveServer, recorder: Recorder, bob: str
) -> None:
    with api(server, recorder) as http, anonymous(server, recorder) as nobody:
        file = upload(http, b"download me", "d.txt")
        own = http.get(f"/v1/files/{file['id']}/download")
        assert own.status_code == 200 and own.content == b"download me"
        assert own.headers["content-type"] == "application/octet-stream"
        assert 'filename="d.txt"' in own.headers["content-disposition"]
        problem(nobody.get(f"{server.url}/v1/files/{file['id']}/download"), 401)

        signed = file["urls"]["download"]
        assert signed.startswith(f"{server.url}/v1/files/{file['id']}/download?")
        response = nobody.get(signed)
        assert response.status_code == 200 and response.content == b"download me"
        with api(server, recorder, bob) as other:  # a signed URL works whoever holds it
            assert other.get(signed).content == b"download me"

        url = httpx.URL(signed)
        params = dict(url.params)
        for change in ({"signature": "AAAA"}, {"owner": "bob"}, {"expiry": "9999999999"}):
            problem(nobody.get(url.copy_with(params={**params, **change})), 403)
        assert invalid_field(nobody.get(url.copy_with(params={"owner": "admin"}))) == {
            "expiry",
            "signature",
        }
        assert invalid_field(nobody.get(url.copy_with(params={**params, "expiry": "soon"}))) == {
            "expiry"
        }

        key = signing_key(server.data_dir)  # the server's secret, to sign what it never would
        past = int(time.time()) - 10
        expired = {
            "owner": "admin",
            "expiry": past,
            "signature": download_signature(key, file["id"], "admin", past),
        }
        assert "expired" in problem(nobody.get(url.copy_with(params=expired)), 403)["detail"]
        later, unknown = int(time.time()) + 600, "0" * 26
        forged = {
            "owner": "admin",
            "expiry": later,
            "signature": download_signature(key, unknown, "admin", later),
        }
        problem(nobody.get(f"{server.url}/v1/files/{unknown}/download", params=forged), 404)
        assert http.delete(f"/v1/files/{file['id']}").status_code == 204
        problem(nobody.get(signed), 404)


# -- files into predictions ---------------------------------------------------------------------


def test_file_inputs_upload_data_uri_and_http_url(
    server: LiveServer,
    recorder: Recorder,
    input_path: str,
    web_root: tuple[str, Path],
    tmp_path: Path,
    bob: str,
) -> None:
    client = official(server, recorder)
    path = tmp_path / "doc.txt"
    path.write_text("uploaded by the client")
    with open(path, "rb") as document:  # the client uploads it and passes urls.get
        assert client.run("admin/input-path", input={"document": document}) == (
            "uploaded by the client"
        )
    with open(path, "rb") as document:
        assert (
            client.run(
                "admin/input-path", input={"document": document}, file_encoding_strategy="base64"
            )
            == "uploaded by the client"
        )
    base, folder = web_root
    (folder / "page.txt").write_text("served over http")
    assert client.run("admin/input-path", input={"document": f"{base}/page.txt"}) == (
        "served over http"
    )
    uploaded = client.files.create(path)
    prediction = client.predictions.create(
        version=input_path, input={"document": uploaded.urls["get"]}
    )
    prediction.wait()
    assert prediction.status == "succeeded", prediction.error
    assert prediction.output == "uploaded by the client"
    assert prediction.input["document"] == uploaded.urls["get"]
    with api(server, recorder, bob) as other:  # another account's signed URL is a plain URL
        signed = upload(other, b"shared by bob", "bob.txt")["urls"]["download"]
    assert client.run("admin/input-path", input={"document": signed}) == "shared by bob"


def test_file_inputs_the_caller_may_not_use_are_rejected(
    server: LiveServer, recorder: Recorder, input_path: str, bob: str
) -> None:
    with api(server, recorder, bob) as other:
        bobs = upload(other, b"not for admin", "bob.txt")["urls"]["get"]
    with api(server, recorder) as http:
        mine = upload(http, b"deleted soon")
        assert http.delete(f"/v1/files/{mine['id']}").status_code == 204
        for url in (bobs, mine["urls"]["get"], f"{server.url}/v1/files/{'0' * 26}", "ftp://x/y"):
            response = http.post(
                "/v1/predictions", json={"version": input_path, "input": {"document": url}}
            )
            assert invalid_field(response) == {"input.document"}, url
    with pytest.raises(ReplicateError) as rejected:
        official(server, recorder).run("admin/input-path", input={"document": bobs})
    assert rejected.value.status == 422


# -- files out of predictions -------------------------------------------------------------------


def test_file_outputs_are_file_outputs_public_and_absolute(
    server: LiveServer, recorder: Recorder, outputs: None
) -> None:
    client = official(server, recorder)
    single = client.run("admin/output-path", input={"text": "file out"})
    assert isinstance(single, FileOutput)
    assert single.read() == b"file out"
    assert single.url.startswith(f"{server.url}/delivery/") and single.url.endswith("/result.txt")
    with anonymous(server, recorder) as nobody, api(server, recorder) as http:
        public = nobody.get(single.url)
        assert public.status_code == 200 and public.content == b"file out"
        assert public.headers["content-type"].startswith("text/plain")
        assert http.get(single.url).content == b"file out"  # with a token (the Python client's way)
        assert nobody.head(single.url).status_code == 200
        ranged = nobody.get(single.url, headers={"Range": "bytes=5-"})
        assert ranged.status_code == 206 and ranged.content == b"out"
        problem(nobody.get(f"{server.url}/delivery/not-a-key/result.txt"), 404)

    parts = client.run("admin/output-list-path", input={"n": 2})
    assert [p.read() for p in parts] == [b"part 0", b"part 1"]
    assert all(isinstance(p, FileOutput) for p in parts)
    frames = list(client.run("admin/output-iterator-path", input={"frames": 2}))
    assert [f.read() for f in frames] == [b"frame 0", b"frame 1"]


# -- limits and expiry (a second server with tight settings) -------------------------------------


def test_uploads_over_the_limit_get_413(short: LiveServer, recorder: Recorder) -> None:
    with api(short, recorder) as http:
        assert upload(http, b"x" * 1000)["size"] == 1000  # the limit itself is allowed
        before, blobs = http.get("/v1/files").json()["results"], blob_files(short)
        body = problem(http.post("/v1/files", files={"content": ("big", b"x" * 1001)}), 413)
        assert "1000 bytes" in body["detail"]
        problem(http.post("/v1/files", files={"content": ("big", b"x" * 200_000)}), 413)
        # declared larger than any allowed body: refused before the content is stored
        problem(http.post("/v1/files", files={"content": ("big", b"x" * 3_000_000)}), 413)

        boundary = "b0undary"
        payload = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="c"\r\n'
            f"Content-Type: text/plain\r\n\r\n".encode()
            + b"y" * 5000
            + f"\r\n--{boundary}--\r\n".encode()
        )
        chunks = (payload[i : i + 512] for i in range(0, len(payload), 512))  # no Content-Length
        chunked = http.post(
            "/v1/files",
            content=chunks,
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        problem(chunked, 413)
        assert http.get("/v1/files").json()["results"] == before
    with pytest.raises(ReplicateError) as refused:
        official(short, recorder).files.create(io.BytesIO(b"z" * 5000))
    assert refused.value.status == 413
    assert blob_files(short) == blobs


def test_uploads_expire_by_file_expiry(short: LiveServer, recorder: Recorder) -> None:
    with api(short, recorder) as http:
        file = upload(http, b"brief")
        lifetime = datetime.fromisoformat(file["expires_at"]) - datetime.fromisoformat(
            file["created_at"]
        )
        assert lifetime == timedelta(seconds=1)
        eventually(lambda: http.get(f"/v1/files/{file['id']}").status_code == 404, "expiry")
        problem(http.get(f"/v1/files/{file['id']}"), 404)
        assert file["id"] not in [f["id"] for f in http.get("/v1/files").json()["results"]]
        problem(http.get(f"/v1/files/{file['id']}/download"), 404)


def test_output_urls_expire_by_output_expiry(short: LiveServer, recorder: Recorder) -> None:
    short.push(fixture_package("output_path"), "admin/output-path")
    output = official(short, recorder).run("admin/output-path", input={"text": "soon gone"})
    assert output.url.startswith(f"{short.url}/delivery/")
    with anonymous(short, recorder) as nobody:
        eventually(lambda: nobody.get(output.url).status_code == 404, "output expiry")
        problem(nobody.get(output.url), 404)
