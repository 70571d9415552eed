"""S3BlobStore against a real S3 server (moto's, in a subprocess): round trips, stores with
caches of their own sharing one bucket, multipart transfers, deletion, concurrent downloads,
other processes, and the storage URLs `open_blob_store` accepts or refuses."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.s3 import S3Server, moto_server, unique_bucket
from typer.testing import CliRunner

from modelyard.store.blobs import (
    BadStorageURL,
    BlobStore,
    StorageUnreachable,
    open_blob_store,
)
from modelyard.store.s3blobs import CorruptBlob, S3BlobStore

MiB = 1 << 20


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


@pytest.fixture
def url(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket (with a prefix), this process's boto3 pointed at the server."""
    s3.patch_env(monkeypatch)
    return s3.create_bucket(prefix="team/blobs")


def store(url: str, cache: Path) -> S3BlobStore:
    opened = open_blob_store(url, cache)
    assert isinstance(opened, S3BlobStore)
    return opened


def cache_files(blobs: BlobStore) -> list[str]:
    """Everything in the cache folder but the blobs: temporary and lock files left behind."""
    return sorted(
        str(p.relative_to(blobs.root))
        for p in blobs.root.rglob("*")
        if p.is_file() and not (p.parent.parent == blobs.root and p.parent.name == p.name[:2])
    )


def test_bytes_stream_file_and_chunks_round_trip(url: str, tmp_path: Path, s3: S3Server) -> None:
    blobs = store(url, tmp_path / "cache")
    data = b"hello, bucket"
    blob = blobs.put_bytes(data)
    assert blob.key == hashlib.sha256(data).hexdigest() and blob.size == len(data)
    assert blob.md5 == hashlib.md5(data).hexdigest()
    assert blobs.read_bytes(blob.key) == data and blobs.exists(blob.key)
    bucket = url.removeprefix("s3://").split("/")[0]
    name = f"team/blobs/{blob.key[:2]}/{blob.key}"  # the folder store's layout, under the prefix
    assert s3.client().get_object(Bucket=bucket, Key=name)["Body"].read() == data
    source = tmp_path / "source.bin"
    source.write_bytes(b"from a file")
    assert blobs.put_file(source).key == hashlib.sha256(b"from a file").hexdigest()
    with source.open("rb") as stream:
        assert blobs.put_stream(stream).key == hashlib.sha256(b"from a file").hexdigest()
    chunked = blobs.put_chunks([b"a", b"b", b"c"])
    copy = tmp_path / "copy"
    blobs.copy_to(chunked.key, copy)
    assert copy.read_bytes() == b"abc"
    assert blobs.url == url and cache_files(blobs) == []


async def test_receive_uploads_what_arrives_on_the_loop(url: str, tmp_path: Path) -> None:
    blobs = store(url, tmp_path / "a")

    async def body() -> AsyncIterator[bytes]:
        for n in range(3):
            yield bytes([n]) * 1000

    blob = await blobs.receive(body())
    other = store(url, tmp_path / "b")
    assert other.read_bytes(blob.key) == b"".join(bytes([n]) * 1000 for n in range(3))


def test_stores_with_caches_of_their_own_share_the_bucket(url: str, tmp_path: Path) -> None:
    writer, reader = store(url, tmp_path / "writer"), store(url, tmp_path / "reader")
    blob = writer.put_bytes(b"written by one replica")
    assert not reader.local_path(blob.key).exists()
    assert reader.exists(blob.key)  # a HEAD: nothing is downloaded to answer it
    assert not reader.local_path(blob.key).exists()
    path = reader.path(blob.key)
    assert path == reader.local_path(blob.key) and path.read_bytes() == b"written by one replica"
    # The reader storing the same bytes finds them in the bucket and uploads nothing.
    reader.client.upload_file = _refuse
    assert reader.put_bytes(b"written by one replica") == blob


def test_a_big_file_goes_in_parts_both_ways(url: str, tmp_path: Path, s3: S3Server) -> None:
    data = os.urandom(20 * MiB + 123)
    source = tmp_path / "weights.bin"
    source.write_bytes(data)
    writer, reader = store(url, tmp_path / "writer"), store(url, tmp_path / "reader")
    blob = writer.put_file(source)
    bucket = url.removeprefix("s3://").split("/")[0]
    head = s3.client().head_object(Bucket=bucket, Key=writer.object_name(blob.key))
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload: three 8 MiB parts
    downloads = _spy(reader, "download_file")
    assert reader.path(blob.key).read_bytes() == data and len(downloads) == 1
    assert cache_files(reader) == []


def test_delete_removes_the_object_and_the_cached_copy(url: str, tmp_path: Path) -> None:
    blobs, other = store(url, tmp_path / "a"), store(url, tmp_path / "b")
    blob = blobs.put_bytes(b"short-lived")
    blobs.delete(blob.key)
    assert not blobs.local_path(blob.key).exists()
    assert not blobs.exists(blob.key) and not other.exists(blob.key)
    path = other.path(blob.key)  # like the folder store: a path where nothing is
    assert not path.exists()
    with pytest.raises(FileNotFoundError):
        other.read_bytes(blob.key)
    blobs.delete(blob.key)  # deleting what is gone is fine
    assert cache_files(other) == []


def test_threads_asking_for_one_blob_download_it_once(url: str, tmp_path: Path) -> None:
    blob = store(url, tmp_path / "writer").put_bytes(os.urandom(3 * MiB))
    reader = store(url, tmp_path / "reader")
    downloads = _spy(reader, "download_file")
    barrier = threading.Barrier(8)
    paths: list[Path] = []

    def fetch() -> None:
        barrier.wait()
        paths.append(reader.path(blob.key))

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(paths) == 8 and len(set(paths)) == 1
    assert hashlib.sha256(paths[0].read_bytes()).hexdigest() == blob.key
    assert len(downloads) == 1 and cache_files(reader) == []


def test_another_process_with_its_own_cache_reads_and_writes(
    url: str, tmp_path: Path, s3: S3Server
) -> None:
    """What a worker node does: open the store by URL with a cache of its own, fetch a blob
    (a package, weights) and store one (an output) that this process then reads."""
    blobs = store(url, tmp_path / "api")
    blob = blobs.put_bytes(b"package bytes")
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from modelyard.store.blobs import open_blob_store\n"
        "blobs = open_blob_store(sys.argv[1], Path(sys.argv[2]))\n"
        "assert blobs.path(sys.argv[3]).read_bytes() == b'package bytes'\n"
        "print(blobs.put_bytes(b'output bytes').key)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, url, str(tmp_path / "node"), blob.key],
        env=s3.environ(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert blobs.read_bytes(done.stdout.strip()) == b"output bytes"
    # A pickled store (sent to an actor, say) makes a client of its own where it lands.
    copy = pickle.loads(pickle.dumps(blobs))
    assert copy.client is not blobs.client and copy.read_bytes(blob.key) == b"package bytes"


def test_a_failed_upload_leaves_nothing_cached(url: str, tmp_path: Path) -> None:
    blobs = store(url, tmp_path / "cache")
    blobs.client.upload_file = _refuse
    with pytest.raises(ConnectionError):
        blobs.put_bytes(b"never arrives")
    key = hashlib.sha256(b"never arrives").hexdigest()
    assert not blobs.local_path(key).exists() and not blobs.exists(key)
    assert cache_files(blobs) == []


def test_a_damaged_object_is_not_cached(url: str, tmp_path: Path, s3: S3Server) -> None:
    blobs = store(url, tmp_path / "cache")
    key = hashlib.sha256(b"the real bytes").hexdigest()
    bucket = url.removeprefix("s3://").split("/")[0]
    s3.client().put_object(Bucket=bucket, Key=blobs.object_name(key), Body=b"other bytes")
    with pytest.raises(CorruptBlob):
        blobs.path(key)
    assert not blobs.local_path(key).exists() and cache_files(blobs) == []


def test_folders_and_file_urls_are_folder_stores(tmp_path: Path) -> None:
    default = open_blob_store(None, tmp_path / "default")
    assert type(default) is BlobStore and default.root == tmp_path / "default"
    folder = open_blob_store(str(tmp_path / "folder"), tmp_path / "unused")
    assert type(folder) is BlobStore and folder.root == tmp_path / "folder"
    as_url = open_blob_store((tmp_path / "url").as_uri(), tmp_path / "unused")
    assert type(as_url) is BlobStore and as_url.root == tmp_path / "url"
    key = folder.put_bytes(b"x").key
    assert open_blob_store(folder.url, tmp_path / "unused").read_bytes(key) == b"x"
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize(
    ("storage_url", "says"),
    [
        ("", "is empty"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://bucket/prefix?versionId=1", "is not s3://bucket"),
        ("https://bucket.example.com/blobs", "is not a folder, file:// or s3://"),
        ("gs://bucket", "is not a folder, file:// or s3://"),
        ("file://server/share", "is not file:///absolute/path"),
    ],
)
def test_bad_storage_urls_say_why_in_one_line(storage_url: str, says: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="storage URL") as raised:
        open_blob_store(storage_url, tmp_path)
    assert isinstance(raised.value, BadStorageURL)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_bucket_fails_at_once(url: str, tmp_path: Path) -> None:
    name = unique_bucket("missing")
    with pytest.raises(StorageUnreachable, match=f"the bucket '{name}' does not exist"):
        open_blob_store(f"s3://{name}/blobs", tmp_path)
    # Without the check nothing is reached: a store is cheap to make.
    assert isinstance(open_blob_store(f"s3://{name}", tmp_path, check=False), S3BlobStore)


def test_serve_refuses_a_missing_bucket_in_one_line(url: str, tmp_path: Path) -> None:
    from modelyard.cli.main import app

    for storage_url, says in [
        ("s3://missing", "Error: the bucket 'missing' does not exist at s3://missing"),
        ("ftp://host/blobs", "Error: the storage URL 'ftp://host/blobs' is not a folder"),
    ]:
        result = CliRunner().invoke(
            app, ["serve", "--data-dir", str(tmp_path), "--storage-url", storage_url]
        )
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(says), result.output
        assert not (tmp_path / "modelyard.db").exists()  # refused before anything was written


def _refuse(*args: Any, **kwargs: Any) -> None:
    raise ConnectionError("the upload was refused")


def _spy(blobs: S3BlobStore, method: str) -> list[tuple[Any, ...]]:
    """Record the calls of one of the store's client methods (they still go through)."""
    calls: list[tuple[Any, ...]] = []
    real = getattr(blobs.client, method)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    setattr(blobs.client, method, spy)
    return calls
