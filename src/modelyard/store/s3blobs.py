"""Blobs in an S3 bucket (AWS S3, Cloudflare R2, MinIO...), read and written through a cache folder.

Objects are named `{prefix}/ab/abcdef…`, the folder store's own layout, so an existing blob folder
moves over with `aws s3 sync data/blobs s3://bucket/prefix --exclude ".*"` (and back).

Writing: the bytes go to the cache folder first, hashed as they are written (the folder store's
`put_chunks`), so the key is known before anything is sent; they are then uploaded unless the
bucket has that key already (one HEAD). boto3's managed transfer sends big files in parts, several
at once.
Reading: `path(key)` is the cached file, downloaded first when this machine lacks it: into a
temporary file, checked against its key, then renamed into place, under a lock file per key, so
threads and processes sharing one cache download a blob once and never see part of one.

Every API replica and every worker node keeps a cache of its own; the bucket is what they share.
The client is configured the usual AWS way, so R2 and MinIO work as well as S3: AWS_ENDPOINT_URL
or AWS_ENDPOINT_URL_S3, AWS_REGION or AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance role).

Everything here may block on the network: call it off the event loop. A store holds a boto3
client, which must not cross a fork: each process opens its own (`open_blob_store(store.url, its
cache)`; pickling a store does that too).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .blobs import CHUNK, Blob, BlobStore, StorageUnreachable

MiB = 1 << 20
# Objects above 8 MiB go up and down in 8 MiB parts, 8 at a time (s3transfer makes the parts
# bigger by itself when a file would need more than the 10,000 parts S3 allows).
TRANSFER = {"multipart_threshold": 8 * MiB, "multipart_chunksize": 8 * MiB, "max_concurrency": 8}
# Uploads (64 threads), outputs (8) and each transfer's own threads share one client's pool.
MAX_CONNECTIONS = 64
_MISSING = {"404", "NoSuchKey", "NotFound"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403"}


class CorruptBlob(OSError):
    """Downloaded bytes whose SHA-256 is not their key (a damaged or foreign object)."""


class S3BlobStore(BlobStore):
    """Blobs in `bucket` under `prefix`, cached in `cache_dir` (laid out like a folder store)."""

    def __init__(self, bucket: str, prefix: str, cache_dir: Path, *, client: Any = None) -> None:
        super().__init__(cache_dir)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else s3_client()
        from boto3.s3.transfer import TransferConfig

        self._transfer = TransferConfig(**TRANSFER)

    def __reduce__(self) -> tuple[Any, ...]:
        # A boto3 client cannot be pickled: the other process makes its own from the environment.
        return (type(self), (self.bucket, self.prefix, self.root))

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def object_name(self, key: str) -> str:
        name = f"{key[:2]}/{key}"
        return f"{self.prefix}/{name}" if self.prefix else name

    # -- reading --------------------------------------------------------------------------

    def path(self, key: str) -> Path:
        """The cached file, downloaded first if needed; a path that does not exist when the
        bucket has no such blob (as the folder store's would be)."""
        local = self.local_path(key)
        if not local.exists():
            self._fetch(key, local)
        return local

    def exists(self, key: str) -> bool:
        return self.local_path(key).exists() or self._in_bucket(key)

    def check(self) -> None:
        """Reach the bucket once (a listing of the prefix, which a token limited to that prefix
        may do too); StorageUnreachable with one line saying what is wrong when it fails."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"{self.url} (endpoint {self.client.meta.endpoint_url})"
        try:
            self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "", MaxKeys=1
            )
        except NoCredentialsError:
            raise StorageUnreachable(
                f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from None
        except ClientError as exc:
            code, message = _error(exc)
            if code == "NoSuchBucket":
                raise StorageUnreachable(
                    f"the bucket {self.bucket!r} does not exist at {where}"
                ) from None
            if code in _DENIED:
                raise StorageUnreachable(
                    f"S3 refused access to {where} ({code}): check the credentials"
                ) from None
            raise StorageUnreachable(f"S3 cannot be used at {where}: {code} {message}") from None
        except BotoCoreError as exc:
            raise StorageUnreachable(f"S3 cannot be reached at {where}: {exc}") from None

    # -- writing --------------------------------------------------------------------------

    def put_chunks(self, chunks: Iterable[bytes]) -> Blob:
        blob = super().put_chunks(chunks)  # hashed while written to the cache
        try:
            if not self._in_bucket(blob.key):
                self.client.upload_file(
                    str(self.local_path(blob.key)),
                    self.bucket,
                    self.object_name(blob.key),
                    ExtraArgs={"ContentType": "application/octet-stream"},
                    Config=self._transfer,
                )
        except BaseException:
            # Not in the bucket, so the cache must not say it is stored (exists() trusts it).
            super().delete(blob.key)
            raise
        return blob

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_name(key))
        super().delete(key)

    # -- helpers --------------------------------------------------------------------------

    def _in_bucket(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_name(key))
        except ClientError as exc:
            if _error(exc)[0] in _MISSING:
                return False
            raise
        return True

    def _fetch(self, key: str, local: Path) -> None:
        """Download `key` to `local`, once however many threads and processes ask together."""
        locks = self.root / ".locks"
        locks.mkdir(exist_ok=True)
        lock_path = locks / key
        with open(lock_path, "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            try:
                if not local.exists():  # else it came while this one waited
                    self._download(key, local)
            finally:
                # A waiter on this lock file finds the blob when it gets the lock; one arriving
                # after the unlink locks a new file, and at worst downloads the blob again.
                lock_path.unlink(missing_ok=True)

    def _download(self, key: str, local: Path) -> None:
        from botocore.exceptions import ClientError

        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        os.close(fd)
        try:
            try:
                self.client.download_file(
                    self.bucket, self.object_name(key), tmp, Config=self._transfer
                )
            except ClientError as exc:
                if _error(exc)[0] in _MISSING:
                    return  # nothing there: `local` stays absent
                raise
            if _sha256(Path(tmp)) != key:
                raise CorruptBlob(f"s3://{self.bucket}/{self.object_name(key)} is not its key")
            local.parent.mkdir(exist_ok=True)
            os.replace(tmp, local)
        finally:
            Path(tmp).unlink(missing_ok=True)


def s3_client() -> Any:
    """A boto3 S3 client from the usual AWS variables (AWS_REGION counts, which boto3 ignores)."""
    import boto3
    from botocore.config import Config

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    checksums = {}
    # boto3 1.36 began adding CRC checksums to every upload, which S3-compatible stores that
    # predate them refuse; a blob is checked against its SHA-256 when it is downloaded anyway.
    # The AWS variables, when set, still decide.
    if "AWS_REQUEST_CHECKSUM_CALCULATION" not in os.environ:
        checksums["request_checksum_calculation"] = "when_required"
    if "AWS_RESPONSE_CHECKSUM_VALIDATION" not in os.environ:
        checksums["response_checksum_validation"] = "when_required"
    config = Config(
        connect_timeout=10,
        read_timeout=120,
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=MAX_CONNECTIONS,
        **checksums,
    )
    return boto3.session.Session(region_name=region).client("s3", config=config)


def _error(exc: Any) -> tuple[str, str]:
    error = exc.response.get("Error", {})
    return str(error.get("Code", "")), str(error.get("Message", ""))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
