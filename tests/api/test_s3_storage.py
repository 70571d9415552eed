"""The platform over S3 storage (moto's server), in process: a push, an upload through the Files
API used as a prediction's input, and the output file, all stored in the bucket; then a second
replica on the same database and bucket, with an empty cache of its own, serves the output URL
and the upload's signed download URL (fetching the blobs from the bucket).

The instances are stand-ins, as in test_inprocess.py: this one does what the `mirror` package
does (its input fetched through the platform's own HTTP client, copied to an output file), so no
worker process is needed to show where the bytes go.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.s3 import S3Server, moto_server

from modelyard.engine.backend import InstanceSpec
from modelyard.engine.files import SECRET_FILE
from modelyard.platform import build_app
from modelyard.runtime.events import Done, Event, OutputFile, Started
from modelyard.settings import Settings
from modelyard.store.accounts import ensure_admin
from modelyard.store.s3blobs import S3BlobStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

PACKAGE = Path(__file__).parents[1] / "e2e" / "packages" / "mirror"
PUBLIC_URL = "http://modelyard.test"
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64


class MirrorBackend:
    """Instances that copy their `image` input to an output file."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.http: httpx.AsyncClient | None = None  # the platform's client, set once it exists

    def instance(self, spec: InstanceSpec) -> _Mirror:
        assert self.http is not None
        return _Mirror(self.http, self.scratch)

    def can_place(self, hardware: object) -> bool:
        return True

    async def close(self) -> None:
        pass


class _Mirror:
    lost = False

    def __init__(self, http: httpx.AsyncClient, scratch: Path) -> None:
        self.http, self.scratch = http, scratch

    async def start(self, progress: object) -> int:
        return 1

    async def predict(self, inputs: dict[str, Any], prediction_id: str) -> AsyncIterator[Event]:
        yield Started(at=time.time())
        response = await self.http.get(inputs["image"])  # a delivery URL of this server
        response.raise_for_status()
        out = self.scratch / prediction_id / "mirror.png"
        out.parent.mkdir(parents=True)
        out.write_bytes(response.content)
        yield Done(status="succeeded", output=OutputFile(out))

    async def cancel(self, prediction_id: str) -> bool:
        return False

    async def stop(self) -> None:
        pass


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


async def test_uploads_and_outputs_live_in_the_bucket_for_every_replica(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3.patch_env(monkeypatch)
    url = s3.create_bucket(prefix="blobs")
    bucket = url.removeprefix("s3://").split("/")[0]
    first = Settings(data_dir=tmp_path / "first", public_url=PUBLIC_URL, storage_url=url)
    backend = MirrorBackend(tmp_path / "scratch")
    app = build_app(first, web=False, backend=backend)
    platform = app.state.platform
    assert isinstance(platform.blobs, S3BlobStore)
    backend.http = platform.engine.files.http_client()
    with platform.db.session() as session:
        issued = ensure_admin(session, "admin")
    assert issued is not None
    headers = {"Authorization": f"Bearer {issued.token}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL, headers=headers
        ) as client,
    ):
        version = await push(client, tmp_path)
        uploaded = await client.post("/v1/files", files={"content": ("in.png", IMAGE, "image/png")})
        assert uploaded.status_code == 201, uploaded.text
        upload = uploaded.json()
        created = await client.post(
            "/v1/predictions",
            json={"version": version, "input": {"image": upload["urls"]["get"]}},
        )
        assert created.status_code == 201, created.text
        prediction = await finished(client, created.json()["id"])
        assert prediction["status"] == "succeeded", prediction
        output_url = prediction["output"]
        assert output_url.startswith(f"{PUBLIC_URL}/delivery/")
        assert (await client.get(output_url)).content == IMAGE
        download = await client.get(f"/v1/files/{upload['id']}/download")
        assert download.status_code == 200 and download.content == IMAGE
    await backend.http.aclose()

    # Everything is in the bucket: the package, the upload and the output (the same bytes as
    # the upload, so one object: blobs are content-addressed).
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix="blobs/")
    names = {item["Key"] for item in listed.get("Contents", [])}
    assert platform.blobs.object_name(upload["checksums"]["sha256"]) in names
    assert len(names) == 2

    # A second replica: the same database and bucket, the same server secret (replicas share
    # it, for signed URLs), and an empty cache of its own. It serves both without the first.
    second = Settings(
        data_dir=tmp_path / "second",
        public_url=PUBLIC_URL,
        storage_url=url,
        database_url=first.db_url,
    )
    second.data_dir.mkdir()
    shutil.copyfile(first.data_dir / SECRET_FILE, second.data_dir / SECRET_FILE)
    shutil.rmtree(first.blob_dir)  # the first replica's cache is gone too: only S3 has them
    replica = build_app(second, web=False, backend=MirrorBackend(tmp_path / "unused"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=replica), base_url=PUBLIC_URL
    ) as anonymous:
        delivered = await anonymous.get(output_url)
        assert delivered.status_code == 200 and delivered.content == IMAGE
        signed = await anonymous.get(upload["urls"]["download"])
        assert signed.status_code == 200 and signed.content == IMAGE
    assert replica.state.platform.blobs.local_path(upload["checksums"]["sha256"]).exists()


async def push(client: httpx.AsyncClient, tmp_path: Path) -> str:
    archive = shutil.make_archive(str(tmp_path / "package"), "gztar", PACKAGE)
    created = await client.post(
        "/v1/models",
        json={"owner": "admin", "name": "mirror", "visibility": "private", "hardware": "cpu"},
    )
    assert created.status_code in (200, 201), created.text
    answer = await client.post(
        "/v1/models/admin/mirror/versions",
        content=Path(archive).read_bytes(),
        headers={"Content-Type": "application/gzip"},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def finished(client: httpx.AsyncClient, prediction_id: str) -> dict[str, Any]:
    for _ in range(1000):
        body: dict[str, Any] = (await client.get(f"/v1/predictions/{prediction_id}")).json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"{prediction_id} never ended")
