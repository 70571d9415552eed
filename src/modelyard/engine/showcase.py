"""A catalog package's recorded example becomes its model's default example, and its cover image
the model's `cover_image_url` (both written by `modelyard record-example`).

The example is stored as a finished prediction of the model's version, its files as records that
never expire, served like any output. Its id is derived from what it shows (the version, the
example folder, the public URL), so registering again on every start changes nothing; an example
recorded anew replaces the old one of the same version, while examples of older versions stay.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session

from modelyard.cogspec.inputs import file_fields
from modelyard.store.catalog import mark_example
from modelyard.store.files import NewFile, add_file
from modelyard.store.ids import content_id
from modelyard.store.predictions import FinishedRun, NewPrediction, add_finished
from modelyard.store.tables import File, Model, Prediction, Version

from .examples import cover_path, example_dir, read_recorded
from .files import FileService, guess_type


def publish_example(
    files: FileService, session: Session, model: Model, owner: str, version: Version, package: Path
) -> str | None:
    """Make the package's recorded example the model's default example; its id, or None when
    the package has none. Raises `ExampleError` when the example folder is broken."""
    recorded = read_recorded(package, file_fields(version.openapi_schema))
    if recorded is None:
        return None
    example_id = content_id(_fingerprint(files.urls.public_url, version.id, example_dir(package)))
    if model.default_example_id == example_id:
        return example_id
    previous = session.get(Prediction, model.default_example_id or "")
    if previous is not None and previous.version_id == version.id:
        session.delete(previous)  # re-recorded, or served under another URL: replace it
        session.flush()
    keeper = _Keeper(files, session, model.owner_id)
    inputs = keeper.all(recorded.input, purpose="example")
    run = FinishedRun(keeper.all(recorded.output, "output"), recorded.logs, recorded.predict_time)
    new = NewPrediction(
        account_id=model.owner_id,
        model_id=model.id,
        model_ref=f"{owner}/{model.name}",
        version_pk=version.pk,
        version_id=version.id,
        input=inputs,
        source="web",
    )
    add_finished(session, new, example_id, run)
    for row in keeper.rows:  # stored before the prediction existed; now they belong to it
        row.prediction_id = example_id
    mark_example(session, example_id, default=True).is_public = True
    return example_id


def publish_cover(files: FileService, session: Session, model: Model, package: Path) -> None:
    """Point the model's cover at the package's cover image (stored once per content)."""
    cover = cover_path(package)
    if cover is None:
        return
    url = model.cover_image_url or ""
    current = None
    if url.startswith(files.urls.public_url + "/"):
        current = files.local_file(httpx.URL(url))
    if (
        current is not None
        and current[0].blob_key == hashlib.sha256(cover.read_bytes()).hexdigest()
    ):
        return
    model.cover_image_url = _Keeper(files, session, model.owner_id).store(cover, purpose="cover")


class _Keeper:
    """Stores example files as blobs with records that never expire; hands out their URLs."""

    def __init__(self, files: FileService, session: Session, account_id: int) -> None:
        self.files, self.session, self.account_id = files, session, account_id
        self.rows: list[File] = []

    def store(self, path: Path, purpose: str) -> str:
        blob = self.files.blobs.put_file(path)
        new = NewFile(
            account_id=self.account_id,
            name=path.name,
            content_type=guess_type(path.name),
            purpose=purpose,
        )
        row = add_file(self.session, new, blob)
        self.rows.append(row)
        return self.files.delivery_url(row)

    def all(self, value: Any, purpose: str) -> Any:
        """`value` with every file (a `Path`) replaced by its URL."""
        if isinstance(value, Path):
            return self.store(value, purpose)
        if isinstance(value, list):
            return [self.all(v, purpose) for v in value]
        if isinstance(value, dict):
            return {k: self.all(v, purpose) for k, v in value.items()}
        return value


def _fingerprint(public_url: str, version_id: str, folder: Path) -> bytes:
    digest = hashlib.sha256(f"{public_url}\n{version_id}\n".encode())
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\n" + hashlib.sha256(path.read_bytes()).digest())
    return digest.digest()
