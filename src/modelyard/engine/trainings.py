"""What a successful training leaves behind: a new version of its destination model.

The trainer (Cog's `train:`) returns its weights as a file (`TrainingOutput(weights=Path)`, or a
bare `Path`). By the time the finisher runs, the engine has stored that file as a blob, put its
delivery URL in the output and handed the finisher the File records it stored
(`FileService.store_outputs`): the weights are the record behind that URL, taken as it is (no
lookup by URL, no second read of the bytes). The new version is the trained version's package
plus that blob: `id = sha256(package_key + ":" + weights_key)`, so training to the same weights
twice gives the same version. When the version boots, the engine hands the blob to `setup(weights=...)`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import update

from modelyard.store.database import Database
from modelyard.store.models import add_version, model_by_id
from modelyard.store.predictions import NewEvent
from modelyard.store.tables import File, Prediction, Version

from .files import FileService

log = logging.getLogger(__name__)

NO_WEIGHTS = (
    "The trainer returned no weights file, so no version was created. A trainer returns "
    "TrainingOutput(weights=Path(...)) or a Path."
)


def trained_version_id(package_key: str, weights_key: str) -> str:
    return hashlib.sha256(f"{package_key}:{weights_key}".encode()).hexdigest()


def weights_url(output: Any) -> str | None:
    """The weights' URL in a trainer's output: `{"weights": url, ...}` or the URL itself."""
    if isinstance(output, dict):
        output = output.get("weights")
    return output if isinstance(output, str) else None


def training_finisher(
    db: Database, files: FileService
) -> Callable[[Prediction, NewEvent, Sequence[File]], Awaitable[NewEvent]]:
    """The engine's finisher for kind `training` (see `Engine.finishers`): `finish(training,
    done, files)`, where `files` are the records `store_outputs` made of the output's files."""

    async def finish(training: Prediction, done: NewEvent, stored: Sequence[File]) -> NewEvent:
        try:
            return await asyncio.to_thread(_finish, db, files, training, done, stored)
        except Exception as exc:  # a bug here must still end the training with a reason
            log.exception("could not create the version of training %s", training.id)
            return _failed(done, f"The training ran, but creating its version failed: {exc}")

    return finish


def weights_file(files: FileService, url: str | None, stored: Sequence[File]) -> File | None:
    """The record of the weights: the stored file whose delivery URL is `url` (a URL that is
    no file of this output, such as a link elsewhere, names no weights)."""
    return next((file for file in stored if url and files.delivery_url(file) == url), None)


def _finish(
    db: Database, files: FileService, training: Prediction, done: NewEvent, stored: Sequence[File]
) -> NewEvent:
    url = weights_url(done.data.get("output"))
    weights = weights_file(files, url, stored)
    if weights is None:
        return _failed(done, NO_WEIGHTS)
    with db.session() as session:
        source = session.get(Version, training.version_pk)
        destination = (
            model_by_id(session, training.destination_model_id)
            if training.destination_model_id is not None
            else None
        )
        if source is None or destination is None:
            return _failed(
                done,
                "The destination model or the trained version was deleted "
                "while the training ran, so no version was created.",
            )
        version, _ = add_version(
            session,
            destination.model,
            version_id=trained_version_id(source.package_key, weights.blob_key),
            package_key=source.package_key,
            weights_key=weights.blob_key,
            cog_version=source.cog_version,
            openapi_schema=source.openapi_schema,
        )
        # The weights now belong to a version: keep their URL working whatever the output expiry.
        session.execute(
            update(File).where(File.id == weights.id).values(purpose="weights", expires_at=None)
        )
        ref = f"{destination.ref}:{version.id}"
    data = dict(done.data)
    data["output"] = {"version": ref, "weights": url}
    return NewEvent("done", data)


def _failed(done: NewEvent, error: str) -> NewEvent:
    return NewEvent(
        "done", {"status": "failed", "error": error, "metrics": done.data.get("metrics") or {}}
    )
