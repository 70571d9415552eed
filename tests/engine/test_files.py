"""FileService on a real SQLite database and blob folder: uploads' JSON, signed download URLs,
deleting and expiring files without deleting bytes that something else still uses, and the
in-process transport that serves this server's own files to models."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from modelyard.engine.files import FileService, clean_name
from modelyard.engine.urls import Urls
from modelyard.settings import Settings
from modelyard.store.accounts import create_account
from modelyard.store.blobs import BlobStore
from modelyard.store.database import Database
from modelyard.store.models import add_version, create_model
from modelyard.store.tables import Account

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
