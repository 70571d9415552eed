"""FileService on a real SQLite database and blob folder: uploads' JSON, signed download URLs,
deleting and expiring files without deleting bytes that something else still uses, the
in-process transport that serves this server's own files to models, and storing output files
(off the event loop, handing back their records)."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import func, select

from modelyard.engine.files import FileService, StoredOutputs, clean_name
from modelyard.engine.urls import Urls
from modelyard.runtime.events import OutputFile
from modelyard.settings import Settings
from modelyard.store.accounts import create_account
from modelyard.store.blobs import Blob, BlobStore
from modelyard.store.database import Database
from modelyard.store.models import add_version, create_model
from modelyard.store.predictions import NewPrediction, create_prediction
from modelyard.store.tables import Account, File, Prediction

PUBLIC = "https://files.example"


def make_service(data_dir: Path, **settings: object) -> FileService:
    data_dir.mkdir(parents=True, exist_ok=True)
    config = Settings(data_dir=data_dir, public_url=PUBLIC, **settings)  # type: ignore[arg-type]
    db = Database(config.db_url)
    db.migrate()
    return FileService(config, db, BlobStore(config.blob_dir), Urls(config.public_url))


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FileService]:
    service = make_service(tmp_path)
    yield service
    service.db.dispose()


def account(files: FileService, username: str) -> Account:
    with files.db.session() as session:
        return create_account(session, username)


def upload(files: FileService, owner: Account, data: bytes, name: str = "a.txt"):
    blob = files.blobs.put_bytes(data)
    return files.save_upload(owner.id, name, "text/plain", {"k": 1}, blob)


def test_upload_json_has_every_field_the_clients_need(files: FileService) -> None:
    ada = account(files, "ada")
    file = upload(files, ada, b"hello")
    body = files.file_json(file, "ada")
    assert body["id"] == file.id and body["name"] == "a.txt" and body["size"] == 5
    assert body["etag"] == hashlib.md5(b"hello").hexdigest() == body["checksums"]["md5"]
    assert body["checksums"]["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert body["metadata"] == {"k": 1}
    assert body["created_at"].endswith("Z") and body["expires_at"].endswith("Z")
    assert body["urls"]["get"] == f"{PUBLIC}/v1/files/{file.id}"
    download = urlparse(body["urls"]["download"])
    assert download.path == f"/v1/files/{file.id}/download"
    query = {k: v[0] for k, v in parse_qs(download.query).items()}
    assert query["owner"] == "ada"
    assert int(query["expiry"]) == int(file.expires_at.timestamp())
    assert files.check_signature(file.id, "ada", int(query["expiry"]), query["signature"]) is None


def test_signatures_cover_owner_id_and_expiry(files: FileService) -> None:
    later = int(time.time()) + 600
    good = files.signature("f" * 26, "ada", later)
    assert files.check_signature("f" * 26, "ada", later, good) is None
    assert "not valid" in files.check_signature("f" * 26, "bob", later, good)
    assert "not valid" in files.check_signature("g" * 26, "ada", later, good)
    assert "not valid" in files.check_signature("f" * 26, "ada", later + 1, good)
    assert "not valid" in files.check_signature("f" * 26, "ada", later, "%%%not base64")
    # `+` of an unencoded URL arrives as a space
    assert files.check_signature("f" * 26, "ada", later, good.replace("+", " ")) is None
    past = int(time.time()) - 1
    expired = files.signature("f" * 26, "ada", past)
    assert "expired" in files.check_signature("f" * 26, "ada", past, expired)
    # The spec's message, "{owner} {id} {expiry}", with standard base64.
    assert base64.b64decode(good, validate=True)


def test_the_server_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    first = make_service(tmp_path)
    signature = first.signature("x" * 26, "ada", 2_000_000_000)
    secret = tmp_path / "secret.key"
    assert secret.stat().st_mode & 0o077 == 0
    again = make_service(tmp_path)
    assert again.signature("x" * 26, "ada", 2_000_000_000) == signature
    other = make_service(tmp_path / "elsewhere")
    assert other.signature("x" * 26, "ada", 2_000_000_000) != signature


def test_deleting_keeps_bytes_that_another_record_uses(files: FileService) -> None:
    ada, bob = account(files, "ada"), account(files, "bob")
    first, second = upload(files, ada, b"same"), upload(files, bob, b"same")
    assert first.blob_key == second.blob_key
    files.delete(first)
    assert files.upload(ada.id, first.id) is None
    assert files.blobs.exists(second.blob_key)
    files.delete(second)
    assert not files.blobs.exists(second.blob_key)


def test_deleting_keeps_bytes_a_version_uses(files: FileService) -> None:
    ada = account(files, "ada")
    file = upload(files, ada, b"package bytes")
    with files.db.session() as session:
        model = create_model(session, session.get(Account, ada.id), "m")
        add_version(
            session,
            model.model,
            version_id="v" * 64,
            package_key=file.blob_key,
            cog_version="0.16",
            openapi_schema={},
        )
    files.delete(file)
    assert files.blobs.exists(file.blob_key)


def test_expired_uploads_vanish_and_are_purged(tmp_path: Path) -> None:
    files = make_service(tmp_path, file_expiry=0.0)
    ada = account(files, "ada")
    file = upload(files, ada, b"short-lived")
    assert files.upload(ada.id, file.id) is None
    assert files.uploads(ada.id, None, 10) == []
    assert files.blobs.exists(file.blob_key)
    assert files.purge_expired() == 1
    assert not files.blobs.exists(file.blob_key)
    assert files.purge_expired() == 0


def test_another_accounts_upload_is_not_found(files: FileService) -> None:
    ada, bob = account(files, "ada"), account(files, "bob")
    file = upload(files, ada, b"mine")
    assert files.upload(bob.id, file.id) is None
    assert files.signed_file(file.id, "bob") is None
    assert files.signed_file(file.id, "ada") is not None


def test_own_urls_signed_urls_and_foreign_urls(files: FileService) -> None:
    ada = account(files, "ada")
    file = upload(files, ada, b"input")
    body = files.file_json(file, "ada")
    assert files.own_file_id(body["urls"]["get"]) == file.id
    assert files.own_file_id(f"{PUBLIC}/files/{file.id}") == file.id  # the root mount
    assert files.own_file_id(f"https://elsewhere.example/v1/files/{file.id}") is None
    # A valid signed URL is usable by anyone, so it is not an "own file" needing its owner.
    assert files.own_file_id(body["urls"]["download"]) is None
    tampered = body["urls"]["download"].replace("owner=ada", "owner=bob")
    assert files.own_file_id(tampered) == file.id


async def test_the_transport_serves_own_files_to_models(files: FileService) -> None:
    ada = account(files, "ada")
    file = upload(files, ada, b"model input")
    body = files.file_json(file, "ada")
    rewritten = files.rewrite_inputs(
        {"doc": body["urls"]["get"], "docs": [body["urls"]["get"]], "n": 1}, ["doc", "docs"]
    )
    assert rewritten["doc"].startswith(f"{PUBLIC}/delivery/") and rewritten["doc"].endswith(
        "/a.txt"
    )
    assert rewritten["docs"] == [rewritten["doc"]] and rewritten["n"] == 1
    async with files.http_client() as client:
        assert (await client.get(rewritten["doc"])).content == b"model input"
        signed = await client.get(body["urls"]["download"])
        assert signed.status_code == 200 and signed.content == b"model input"
        bad = body["urls"]["download"].replace("signature=", "signature=AA")
        assert (await client.get(bad)).status_code == 404
        assert (await client.get(f"{PUBLIC}/delivery/nokey/a.txt")).status_code == 404


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("photo.png", "photo.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ada\\cat.jpg", "cat.jpg"),
        ("bad\nname\x00.txt", "badname.txt"),
        ("", "file"),
        (None, "file"),
        ("..", "file"),
        ("é" * 200 + ".txt", "é" * 125 + ".txt"),
    ],
)
def test_clean_name(given: str | None, expected: str) -> None:
    assert clean_name(given) == expected
    assert len(clean_name(given).encode()) <= 255


# -- outputs ------------------------------------------------------------------------------------


def prediction(files: FileService, owner: Account, kind: str = "prediction") -> Prediction:
    """A stored prediction of a fresh model of `owner` (output records point at one)."""
    with files.db.session() as session:
        model = create_model(session, session.get(Account, owner.id), f"m-{kind}")
        version, _ = add_version(
            session,
            model.model,
            version_id="a" * 64,
            package_key="b" * 64,
            cog_version="0.16",
            openapi_schema={},
        )
        new = NewPrediction(
            account_id=owner.id,
            model_id=model.model.id,
            model_ref=f"{owner.username}/m-{kind}",
            version_pk=version.pk,
            version_id=version.id,
            input={},
            kind=kind,
        )
        return create_prediction(session, new)


def output_file(folder: Path, name: str, data: bytes) -> OutputFile:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return OutputFile(path)


async def test_store_outputs_replaces_files_by_urls_and_returns_the_records(
    tmp_path: Path,
) -> None:
    files = make_service(tmp_path / "data", output_expiry=3600.0)
    ada = account(files, "ada")
    run = prediction(files, ada)
    value = {
        "image": output_file(tmp_path / "1", "cat.png", b"png bytes"),
        "frames": [output_file(tmp_path / "2", "a.txt", b"A"), "caption", 3],
        "nested": {"last": output_file(tmp_path / "3", "b.bin", b"B")},
    }
    stored = await files.store_outputs(ada.id, run.id, value)
    assert isinstance(stored, StoredOutputs)
    assert [f.name for f in stored.files] == ["cat.png", "a.txt", "b.bin"]  # output order
    urls = [files.delivery_url(f) for f in stored.files]
    assert stored.value == {
        "image": urls[0],
        "frames": [urls[1], "caption", 3],
        "nested": {"last": urls[2]},
    }
    assert urls[0].startswith(f"{PUBLIC}/delivery/") and urls[0].endswith("/cat.png")
    for file, data, ctype in zip(
        stored.files,
        [b"png bytes", b"A", b"B"],
        ["image/png", "text/plain", "application/octet-stream"],
        strict=True,
    ):
        assert file.purpose == "output" and file.prediction_id == run.id
        assert file.account_id == ada.id and file.content_type == ctype
        assert file.size == len(data) and file.sha256 == hashlib.sha256(data).hexdigest()
        assert file.expires_at is not None
        found = files.delivered(file.access_key)
        assert found is not None and found[1].read_bytes() == data
    # Without files the value comes back as it is, with no records.
    plain = await files.store_outputs(ada.id, run.id, ["a", {"b": 1}])
    assert plain == StoredOutputs(["a", {"b": 1}], [])
    files.db.dispose()


async def test_store_outputs_hashes_and_copies_off_the_event_loop(
    files: FileService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = account(files, "ada")
    run = prediction(files, ada)
    loop_thread = threading.get_ident()
    seen: list[int] = []
    put_file = files.blobs.put_file

    def watched(path: Path) -> Blob:
        seen.append(threading.get_ident())
        return put_file(path)

    monkeypatch.setattr(files.blobs, "put_file", watched)
    stored = await files.store_outputs(ada.id, run.id, output_file(tmp_path, "w.bin", b"x" * 10))
    assert len(seen) == 1 and seen[0] != loop_thread
    assert stored.value == files.delivery_url(stored.files[0])
    assert stored.files[0].expires_at is None  # no output expiry configured


async def test_a_missing_output_file_raises_and_stores_nothing(
    files: FileService, tmp_path: Path
) -> None:
    ada = account(files, "ada")
    run = prediction(files, ada)
    value = [output_file(tmp_path, "ok.txt", b"ok"), OutputFile(tmp_path / "gone.txt")]
    with pytest.raises(FileNotFoundError):
        await files.store_outputs(ada.id, run.id, value)
    with files.db.session() as session:
        assert session.scalar(select(func.count()).select_from(File)) == 0
    assert [p.name for p in files.blobs.root.rglob("*") if p.is_file()] == []
